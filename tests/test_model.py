"""ponder's own forward pass against Hugging Face's, for Llama, Qwen2 and Qwen3: ragged prefill,
paged decode, a copy-on-write fork and chunked prefill, across block sizes; plus load errors."""

import json

import pytest
import torch
from ponder.engine.torch_backend.model import CausalLM
from ponder.engine.torch_backend.model_runner import ForwardInput, ModelRunner
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

COMMON = dict(
    vocab_size=100,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)
KINDS = {
    "llama": (LlamaConfig, LlamaForCausalLM, {}),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, {}),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, {"head_dim": 32}),
}


@pytest.fixture(scope="module", params=sorted(KINDS))
def checkpoint(request, tmp_path_factory):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config_cls, model_cls, extra = KINDS[request.param]
    hf = model_cls(config_cls(**COMMON, **extra)).eval()
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    return hf, path


def hf_last_logits(hf, ids):
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0, -1]


class Tables:
    """Hands out block ids by hand (the block manager is tested on its own)."""

    def __init__(self, bs):
        self.bs, self.next = bs, 0

    def grow(self, table, length):
        while len(table) * self.bs < length:
            table.append(self.next)
            self.next += 1
        return table


@pytest.mark.parametrize("bs", [1, 3, 16])
def test_prefill_decode_fork_and_chunks_match_hf(checkpoint, bs):
    hf, path = checkpoint
    runner = ModelRunner(CausalLM.from_pretrained(path), num_blocks=200, block_size=bs)
    alloc = Tables(bs)
    seqs = [[5, 6, 7, 8, 9, 10, 11], [3, 4], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30]]
    tables = [alloc.grow([], len(s)) for s in seqs]
    # (a) ragged prefill
    logits = runner.run(
        [ForwardInput(tuple(s), 0, tuple(t)) for s, t in zip(seqs, tables, strict=False)]
    )
    for i, s in enumerate(seqs):
        torch.testing.assert_close(logits[i], hf_last_logits(hf, s), atol=1e-4, rtol=1e-4)
    # (b) decode steps feeding the argmax
    for _ in range(3):
        nxt = logits.argmax(-1).tolist()
        inputs = []
        for s, t, tok in zip(seqs, tables, nxt, strict=False):
            s.append(tok)
            alloc.grow(t, len(s))
            inputs.append(ForwardInput((tok,), len(s) - 1, tuple(t)))
        logits = runner.run(inputs)
        for i, s in enumerate(seqs):
            torch.testing.assert_close(logits[i], hf_last_logits(hf, s), atol=1e-4, rtol=1e-4)
    # (c) two continuations of seqs[0] sharing its blocks, the partial last one copied for b
    base = seqs[0]
    shared = list(tables[0])
    a_table, b_table = list(shared), list(shared)
    copies = []
    if len(base) % bs:
        fresh = alloc.grow([], 1)[0]
        copies = [(b_table[-1], fresh)]
        b_table[-1] = fresh
    alloc.grow(a_table, len(base) + 1)
    alloc.grow(b_table, len(base) + 1)
    out = runner.run(
        [
            ForwardInput((40,), len(base), tuple(a_table)),
            ForwardInput((41,), len(base), tuple(b_table)),
        ],
        copies,
    )
    torch.testing.assert_close(out[0], hf_last_logits(hf, base + [40]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[1], hf_last_logits(hf, base + [41]), atol=1e-4, rtol=1e-4)
    # (d) chunked prefill: one prompt computed in two pieces
    prompt = list(range(30, 43))
    table = alloc.grow([], len(prompt))
    runner.run([ForwardInput(tuple(prompt[:6]), 0, tuple(table))])
    last = runner.run([ForwardInput(tuple(prompt[6:]), 6, tuple(table))])
    torch.testing.assert_close(last[0], hf_last_logits(hf, prompt), atol=1e-4, rtol=1e-4)


def test_load_errors(tmp_path, checkpoint):
    _, path = checkpoint
    config = json.loads((path / "config.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match="model_type 'gpt2' is not supported"):
        CausalLM.from_pretrained(bad)
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no model.safetensors"):
        CausalLM.from_pretrained(bad)
    wide = tmp_path / "wide"
    wide.mkdir()
    (wide / "config.json").write_text(json.dumps({**config, "hidden_size": 32}))
    (wide / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="has shape"):
        CausalLM.from_pretrained(wide)


def test_runner_rejects_bad_inputs(checkpoint):
    _, path = checkpoint
    runner = ModelRunner(CausalLM.from_pretrained(path), num_blocks=4, block_size=2)
    with pytest.raises(ValueError, match="cannot hold"):
        runner.run([ForwardInput((1, 2, 3), 0, (0,))])
    with pytest.raises(ValueError, match="outside"):
        runner.run([ForwardInput((1,), 0, (9,))])
    with pytest.raises(ValueError, match="at least one"):
        runner.run([])


def test_llama_with_attention_and_mlp_biases_matches_hf(tmp_path):
    torch.manual_seed(1)
    hf = LlamaForCausalLM(LlamaConfig(**COMMON, attention_bias=True, mlp_bias=True)).eval()
    with torch.no_grad():  # HF starts biases at zero: randomise them so a missing one shows
        for name, p in hf.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    hf.save_pretrained(tmp_path)
    runner = ModelRunner(CausalLM.from_pretrained(tmp_path), num_blocks=8, block_size=4)
    ids = [5, 6, 7, 8, 9]
    logits = runner.run([ForwardInput(tuple(ids), 0, (0, 1))])
    torch.testing.assert_close(logits[0], hf_last_logits(hf, ids), atol=1e-4, rtol=1e-4)


def test_unsupported_settings_are_refused(tmp_path, checkpoint):
    _, path = checkpoint
    config = json.loads((path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu"}))
    with pytest.raises(ValueError, match="hidden_act"):
        CausalLM.from_pretrained(tmp_path)
