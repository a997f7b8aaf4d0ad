"""oneDNN-prepacked linear weights (engine/torch_backend/packed_linear.py): the same products as
F.linear, re-packed when weights change in place, and the engine's greedy tokens unchanged."""

import pytest
import torch
from ponder import embedded
from ponder.engine import Engine, SamplingParams
from ponder.engine.torch_backend import packed_linear
from ponder.engine.torch_backend.model import CausalLM
from safetensors.torch import load_file

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN"
)


def test_packed_forward_matches_plain_and_follows_weight_updates():
    model = CausalLM.from_pretrained(embedded.model_path())
    assert packed_linear.available(model)
    x = torch.randn(7, model.config.hidden_size)
    layer = model.layers[0].mlp.gate_up_proj
    want = layer(x)
    packed_linear.pack_linears(model)
    assert packed_linear.is_packed(model)
    torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)
    # load_weights changes the parameters in place: the packed copies must follow.
    state = {k: v * 0.5 if k.endswith("gate_proj.weight") else v
             for k, v in checkpoint_weights().items()}  # fmt: skip
    model.load_weights(state)
    packed_out = layer(x)
    packed_linear.unpack_linears(model)
    assert not packed_linear.is_packed(model)
    torch.testing.assert_close(packed_out, layer(x), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(packed_out, want, atol=1e-3)


def checkpoint_weights() -> dict[str, torch.Tensor]:
    """The embedded model's weights under their Hugging Face names."""
    return load_file(str(embedded.model_path() / "model.safetensors"))


def test_engine_greedy_tokens_unchanged_by_packing():
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    prompts = ["Q: 12+30=?\n", "Q: 7*8-3=?\n"]
    outs = []
    for packed in (False, True):
        with Engine.from_pretrained(packed_linears=packed) as engine:
            outs.append([o.outputs[0].token_ids for o in engine.generate(prompts, params)])
    assert outs[0] == outs[1]
