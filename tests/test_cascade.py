"""Cascade decode attention (engine/torch_backend/cascade.py) against the dense paged kernel:
shared prompts read once per group must give the same outputs as every row reading its whole
block list, for groups of different sizes, rows that share nothing, GQA and block sizes 1/16/32."""

import pytest
import torch
from ponder.engine.torch_backend.attention import build_metadata, paged_attention
from ponder.engine.torch_backend.cascade import Workspace, cascade_attention, plan_decode


def make_batch(bs: int, prompt_lens: list[int], members: list[int], own_lens: list[int]):
    """Groups of forks: group g shares the full blocks of a prompt of prompt_lens[g] tokens;
    each member then owns copies of the partial block and own_lens tokens more (the last one is
    this step's new token). Returns context lengths and block tables."""
    nxt, ctx, tables = 0, [], []
    for g, (plen, m) in enumerate(zip(prompt_lens, members, strict=True)):
        full = plen // bs
        shared = list(range(nxt, nxt + full))
        nxt += full
        for i in range(m):
            length = plen + own_lens[(g + i) % len(own_lens)]
            own = -(-length // bs) - full
            tables.append(shared + list(range(nxt, nxt + own)))
            nxt += own
            ctx.append(length)
    return ctx, tables, nxt


@pytest.mark.parametrize("bs", [1, 16, 32])
@pytest.mark.parametrize(
    "groups",
    [
        ([40], [5]),  # one group (best-of-n)
        ([40, 70, 9], [3, 4, 1]),  # ragged groups and a singleton that shares nothing
        ([33, 33], [2, 6]),  # equal prompts in separate groups
    ],
)
def test_cascade_matches_dense(bs, groups):
    torch.manual_seed(bs)
    ctx, tables, used = make_batch(bs, *groups, own_lens=[1, 5, 17, 40])
    hq, hkv, d = 4, 2, 8
    k_cache = torch.randn(hkv, used + 1, bs, d)
    v_cache = torch.randn(hkv, used + 1, bs, d)
    batch = len(ctx)
    q, k, v = torch.randn(batch, hq, d), torch.randn(batch, hkv, d), torch.randn(batch, hkv, d)
    dense_meta = build_metadata([1] * batch, ctx, tables, bs, torch.device("cpu"))
    k2, v2 = k_cache.clone(), v_cache.clone()
    want = paged_attention(q, k, v, k2, v2, dense_meta, scale=0.3)
    meta = plan_decode(ctx, tables, bs, Workspace(torch.device("cpu"), torch.float32))
    shares = any(m > 1 and p >= bs for p, m in zip(*groups, strict=True))
    assert (meta.shared_tables is not None) == shares
    got = cascade_attention(q, k, v, k_cache, v_cache, meta, scale=0.3)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k_cache, k2)  # same slots written
    torch.testing.assert_close(v_cache, v2)


def test_plan_groups_by_shared_blocks():
    ctx, tables, _ = make_batch(4, [10, 12], [3, 2], own_lens=[1, 6])
    meta = plan_decode(ctx, tables, 4, Workspace(torch.device("cpu"), torch.float32))
    assert meta.shared_tables.tolist() == [[0, 1, 0], [6, 7, 8]]  # ids padded with 0
    assert meta.group_size == 3
    assert meta.member_index.tolist() == [0, 1, 2, 3, 4, 3]  # second group padded
    assert meta.member_slot.tolist() == [0, 1, 2, 3, 4]
    # each row sees exactly its group's shared tokens
    assert (~meta.shared_mask[0, :, 0]).sum(-1).tolist() == [8, 8, 8, 12, 12]


def test_one_group_in_batch_order_needs_no_reordering():
    ctx, tables, _ = make_batch(4, [10], [3], own_lens=[1, 6])
    meta = plan_decode(ctx, tables, 4, Workspace(torch.device("cpu"), torch.float32))
    assert meta.shared_tables.tolist() == [[0, 1]]
    assert meta.member_index is None and meta.member_slot is None and meta.ungrouped is None


@pytest.mark.parametrize("bs", [1, 16, 32])
def test_forked_decode_matches_hf_full_recompute(tmp_path, bs):
    """Forks of a 70-token prompt decode through the cascade path (full prompt blocks shared)
    and give Hugging Face's logits at every step (greedy, ragged continuations)."""
    from ponder.engine.torch_backend.model import CausalLM
    from ponder.engine.torch_backend.model_runner import ForwardInput, ModelRunner
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    hf = LlamaForCausalLM(config).eval()
    hf.save_pretrained(tmp_path)
    runner = ModelRunner(CausalLM.from_pretrained(tmp_path), num_blocks=400, block_size=bs)
    prompt = torch.randint(0, 100, (70,)).tolist()
    full = len(prompt) // bs
    nxt = -(-len(prompt) // bs)
    runner.run([ForwardInput(tuple(prompt), 0, tuple(range(nxt)))])
    seqs = [prompt + [t] for t in (3, 50, 77)]  # three forks, each with its own first token
    tables, copies = [], []
    for _ in seqs:  # share the full blocks, copy the partial one (copy-on-write)
        own = list(range(nxt, nxt + 40 // bs + 2))
        nxt += len(own)
        if len(prompt) % bs:
            copies.append((full, own[0]))
        tables.append(list(range(full)) + own)
    for _ in range(4):
        pairs = zip(seqs, tables, strict=True)
        inputs = [ForwardInput((s[-1],), len(s) - 1, tuple(t)) for s, t in pairs]
        logits = runner.run(inputs, copies)
        copies = []
        with torch.no_grad():
            want = torch.stack([hf(torch.tensor([s])).logits[0, -1] for s in seqs])
        torch.testing.assert_close(logits, want, atol=1e-4, rtol=1e-4)
        seqs = [s + [int(x)] for s, x in zip(seqs, logits.argmax(-1), strict=True)]


def test_plan_reuses_its_layout_only_while_tables_and_block_counts_hold():
    """A workspace keeps the last step's layout; over steps that grow every row by one token
    (block counts moving under tables allocated ahead, and a table growing), the reused plan
    equals one built from scratch, field by field."""
    bs = 8
    ctx, tables, used = make_batch(bs, [20, 24], [3, 2], own_lens=[1, 6])
    spare = [t + [used + 10 * r + i for i in range(3)] for r, t in enumerate(tables)]
    ws = Workspace(torch.device("cpu"), torch.float32)
    layouts = []
    for step in range(12):
        grown = [c + step for c in ctx]
        rows = [t[: -(-(c + 7) // bs)] for t, c in zip(spare, ctx, strict=True)]
        if step >= 9:  # row 0 gains a block
            rows[0] = spare[0]
        got = plan_decode(grown, rows, bs, ws)
        want = plan_decode(grown, rows, bs, Workspace(torch.device("cpu"), torch.float32))
        for name in ("slot_mapping", "own_tables", "own_mask", "shared_tables", "shared_mask",
                     "member_index", "member_slot", "ungrouped"):  # fmt: skip
            a, b = getattr(got, name), getattr(want, name)
            assert (a is None) == (b is None), name
            assert a is None or torch.equal(a, b), (step, name)
        assert got.group_size == want.group_size
        layouts.append(ws.layout)
    reused = sum(a is b for a, b in zip(layouts, layouts[1:], strict=False))
    assert 0 < reused < len(layouts) - 1  # some steps reused it, some had to rebuild
