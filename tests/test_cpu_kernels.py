"""The C kernels (engine/torch_backend/cpu_kernels.py). Decode attention against the dense paged
kernel: the same outputs and cache writes for one group (best-of-n), ragged groups with
singletons, rows interleaved across groups, GQA and MHA, head sizes on and off the vector path
(16 | D), block sizes 1/4/16/32, strided q/k/v rows as the model passes them. The layer ops
(add + RMSNorm, rotary in place, SiLU-and-multiply) against model.py's torch path. Loading keeps
the process's floating-point state. The engine: greedy tokens with the kernels equal those
without them."""

import shutil

import pytest
import torch
from ponder.engine import Engine, SamplingParams
from ponder.engine.torch_backend import cpu_kernels
from ponder.engine.torch_backend.attention import build_metadata, paged_attention
from test_cascade import make_batch

loaded, why = cpu_kernels.available()
needs_kernel = pytest.mark.skipif(not loaded, reason=why)


def test_kernel_builds_where_a_compiler_is():
    if shutil.which("cc") or shutil.which("gcc"):
        assert loaded, why


@needs_kernel
def test_loading_the_kernel_keeps_subnormals():
    """A fast-math link (crtfastmath.o) would set flush-to-zero for the whole process at load."""
    tiny = float("1e-310")
    assert tiny * 1.0 == tiny and torch.tensor([tiny], dtype=torch.float64).item() > 0


@needs_kernel
@pytest.mark.parametrize("bs", [1, 4, 16, 32])
@pytest.mark.parametrize("heads", [(4, 2, 32), (9, 3, 64), (4, 4, 8), (6, 2, 48)])
@pytest.mark.parametrize(
    "groups",
    [
        ([40], [9]),  # one group (best-of-n)
        ([35], [40]),  # a wide group, planned in parts
        ([40, 70, 9], [3, 4, 1]),  # ragged groups and a singleton that shares nothing
        ([33, 33, 3], [2, 6, 1]),  # equal prompts in separate groups
    ],
)
def test_kernel_matches_dense(bs, heads, groups):
    hq, hkv, d = heads
    torch.manual_seed(bs * 100 + d)
    ctx, tables, used = make_batch(bs, *groups, own_lens=[1, 5, 17, 40])
    batch = len(ctx)
    perm = torch.randperm(batch).tolist()  # group members interleaved with other rows
    ctx, tables = [ctx[i] for i in perm], [tables[i] for i in perm]
    k_cache = torch.randn(hkv, used + 1, bs, d)
    v_cache = torch.randn(hkv, used + 1, bs, d)
    qkv = torch.randn(batch, (hq + 2 * hkv) * d)  # strided rows, as Attention passes them
    q = qkv[:, : hq * d].view(batch, hq, d)
    k = qkv[:, hq * d : (hq + hkv) * d].view(batch, hkv, d)
    v = qkv[:, (hq + hkv) * d :].view(batch, hkv, d)
    k2, v2 = k_cache.clone(), v_cache.clone()
    dense = build_metadata([1] * batch, ctx, tables, bs, torch.device("cpu"))
    want = paged_attention(q, k, v, k2, v2, dense, scale=0.3)
    meta = cpu_kernels.CpuDecodePlanner(bs, hkv).plan(ctx, tables)
    got = cpu_kernels.paged_decode(q, k, v, k_cache, v_cache, meta, scale=0.3)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)
    assert torch.equal(k_cache, k2) and torch.equal(v_cache, v2)  # the same slots written


@pytest.fixture
def threads():
    """Set torch's thread count for one test (the planner reads it), then restore it."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@needs_kernel
def test_planner_groups_and_reuses_layout(threads):
    threads(1)
    ctx, tables, _ = make_batch(4, [10, 12, 3], [3, 2, 1], own_lens=[1, 6])
    planner = cpu_kernels.CpuDecodePlanner(4)
    meta = planner.plan(ctx, tables)
    assert meta.bounds.tolist() == [0, 3, 5, 6]
    assert meta.shared.tolist() == [2, 3, 0]  # blocks wholly before every member's new token
    assert sorted(meta.order.tolist()) == list(range(6))
    again = planner.plan([c + 1 for c in ctx], tables)  # same tables and block counts? reuse
    same_blocks = all((c) // 4 == (c - 1) // 4 for c in ctx)
    assert (again.tables is meta.tables) == same_blocks


@needs_kernel
def test_planner_splits_groups_so_work_divides_over_threads(threads):
    ctx, tables, _ = make_batch(4, [40], [9], own_lens=[1, 6])
    threads(2)
    meta = cpu_kernels.CpuDecodePlanner(4, kv_heads=3).plan(ctx, tables)  # 3 items: split in 2
    assert meta.bounds.tolist() == [0, 5, 9] and meta.shared.tolist() == [10, 10]
    assert sorted(meta.order.tolist()) == list(range(9))
    meta = cpu_kernels.CpuDecodePlanner(4, kv_heads=2).plan(ctx, tables)  # 2 items: as is
    assert meta.bounds.tolist() == [0, 9]


@needs_kernel
def test_engine_greedy_same_with_and_without_kernel():
    prompts = ["Q: 12+7\n", "Q: 3*4-5\nA:", "Q: 100-1\n", "Q: 9\n"]
    params = SamplingParams(n=3, temperature=0.0, max_tokens=40, ignore_eos=True)
    tokens = []
    for use in (True, False):
        engine = Engine.from_pretrained(cpu_kernel=use)
        try:
            assert (engine.core.runner.cpu_planner is not None) == use
            outs = engine.generate(prompts, params)
            tokens.append([c.token_ids for o in outs for c in o.outputs])
        finally:
            engine.close()
    assert tokens[0] == tokens[1]


@needs_kernel
@pytest.mark.parametrize("rows", [1, 7, 64])
def test_layer_ops_match_torch(rows):
    from ponder.engine.torch_backend.model import RMSNorm, apply_rope, rope_tables

    torch.manual_seed(rows)
    hidden, hq, hkv, d, inter = 96, 6, 2, 16, 80
    norm = RMSNorm(hidden, 1e-5)
    norm.weight.data = torch.randn(hidden)
    x, residual = torch.randn(rows, 2 * hidden)[:, :hidden], torch.randn(rows, hidden)  # strided
    for res in (None, residual):
        want = norm.add(x, res)
        got = cpu_kernels.add_rms_norm(x, res, norm.weight, norm.eps)
        torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[1], want[1])
    qkv = torch.randn(rows, (hq + 2 * hkv) * d)
    cos, sin = rope_tables(torch.randint(0, 500, (rows,)), torch.rand(d // 2), torch.float32)
    want = apply_rope(qkv[:, : (hq + hkv) * d].view(rows, -1, d), cos, sin).reshape(rows, -1)
    got = qkv.clone()
    cpu_kernels.rope_(got, cos, sin, hq + hkv, d)
    torch.testing.assert_close(got[:, : (hq + hkv) * d], want, atol=1e-5, rtol=1e-5)
    assert torch.equal(got[:, (hq + hkv) * d :], qkv[:, (hq + hkv) * d :])  # v untouched
    gate_up = torch.randn(rows, 2 * inter)
    want = torch.nn.functional.silu(gate_up[:, :inter]) * gate_up[:, inter:]
    torch.testing.assert_close(cpu_kernels.silu_mul(gate_up), want, atol=1e-6, rtol=1e-5)


@needs_kernel
@pytest.mark.parametrize("rows", [1, 3, 4, 7, 16, 65])
@pytest.mark.parametrize("shape", [(64, 128), (192, 96), (128, 33)])
def test_packed_linear_matches_f_linear(rows, shape):
    n, k = shape
    torch.manual_seed(rows * n + k)
    weight, bias = torch.randn(n, k), torch.randn(n)
    x = torch.randn(rows, 2 * k)[:, :k]  # strided rows
    packed = cpu_kernels.pack_weight(weight)
    assert packed.shape == (n // 64, k, 64)
    for b in (None, bias):
        want = torch.nn.functional.linear(x, weight, b)
        torch.testing.assert_close(cpu_kernels.packed_linear(x, packed, b), want)
    with pytest.raises(ValueError, match="multiple of 64"):
        cpu_kernels.pack_weight(torch.randn(100, k))


@needs_kernel
def test_packed_copies_follow_load_weights():
    from ponder import embedded
    from ponder.engine.torch_backend.model import CausalLM, _read_safetensors

    model = CausalLM.from_pretrained(embedded.model_path()).use_cpu_kernels()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert all(m.__dict__["packed"] is not None for m in linears[:-1])  # 64k outputs here
    assert linears[-1] is model.lm_head and linears[-1].__dict__["packed"] is None  # 104 words
    weights = _read_safetensors(embedded.model_path())
    model.load_weights({k: v * 0.5 for k, v in weights.items()})
    for m in linears[:-1]:
        assert torch.equal(m.__dict__["packed"], cpu_kernels.pack_weight(m.weight))
        assert m.weight.abs().sum() > 0
