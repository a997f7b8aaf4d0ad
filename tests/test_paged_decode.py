"""The CUDA decode path (paged_decode.py's Triton kernel, cuda_decode.py's buffers and padding)
checked against the portable kernels: on the CPU under Triton's interpreter (TRITON_INTERPRET=1),
and compiled on a CUDA GPU when one is present (CI has none; bench/gpu_decode.py's machine does).

Each check runs in a child process: the interpreter is chosen when Triton's kernels are defined,
so it must be on before paged_decode is imported, and it must not leak into this process. CUDA
graph capture and replay are checked by bench/gpu_decode.py (graphs vs eager, greedy vs HF).
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("triton")

KERNEL_VS_DENSE = """
import os

import torch
from ponder.engine.torch_backend.attention import PagedDecodeMetadata, build_metadata
from ponder.engine.torch_backend.attention import paged_attention
from ponder.engine.torch_backend.paged_decode import paged_decode_attention

torch.manual_seed(0)
on = torch.device(os.environ["CHECK_DEVICE"])
torch.backends.cuda.matmul.allow_tf32 = False
for hq, hkv, d, bs in [(4, 2, 32, 16), (9, 3, 64, 16), (8, 8, 32, 4), (6, 1, 16, 1)]:
    lens = [1, 17, 64, 65, 130]  # a lone token, tile and block edges, several tiles
    batch, blocks = len(lens), sum(-(-n // bs) for n in lens) + 5
    k_cache, v_cache = torch.randn(hkv, blocks, bs, d), torch.randn(hkv, blocks, bs, d)
    perm = torch.randperm(blocks).tolist()  # scattered, non-increasing physical blocks
    tables, at = [], 0
    for n in lens:
        need = -(-n // bs)
        tables.append(perm[at : at + need])
        at += need
    q, k, v = torch.randn(batch, hq, d), torch.randn(batch, hkv, d), torch.randn(batch, hkv, d)
    q, k, v, k_cache, v_cache = (x.to(on) for x in (q, k, v, k_cache, v_cache))
    dense = build_metadata([1] * batch, lens, tables, bs, on)
    want = paged_attention(q, k, v, k_cache, v_cache, dense, scale=0.25)  # writes k, v too
    width = max(len(t) for t in tables) + 3  # stale columns past a row's blocks are not read
    padded = torch.full((batch, width), 10**6, dtype=torch.int32)
    for row, t in enumerate(tables):
        padded[row, : len(t)] = torch.tensor(t)
    for splits in (1, 2, 4, 16):  # 16: more parts than most rows have tiles
        lens_t = torch.tensor(lens, dtype=torch.int32, device=on)
        meta = PagedDecodeMetadata(dense.slot_mapping, padded.to(on), lens_t, splits)
        got = paged_decode_attention(q, k_cache, v_cache, meta, scale=0.25)
        torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)
    # Half precision (bfloat16 on a GPU; the interpreter has none).
    low = torch.float16 if on.type == "cpu" else torch.bfloat16
    half = paged_decode_attention(q.to(low), k_cache.to(low), v_cache.to(low), meta, scale=0.25)
    torch.testing.assert_close(half.float(), want, atol=3e-2, rtol=3e-2)
print("ok")
"""

DECODER_VS_CASCADE = """
import os

import torch
from ponder import embedded
from ponder.engine.torch_backend.cuda_decode import CudaDecoder
from ponder.engine.torch_backend.model import CausalLM
from ponder.engine.torch_backend.model_runner import ForwardInput, ModelRunner

torch.backends.cuda.matmul.allow_tf32 = False
model = CausalLM.from_pretrained(embedded.model_path(), device=os.environ["CHECK_DEVICE"])
BS, BLOCKS = 4, 96
prompts = [[1, 5, 6, 7, 8, 9, 10, 11], [1, 11, 12], [1, 20, 21, 22, 23, 24, 25, 26, 27]]


def decode(paged: bool):
    model.use_triton(paged)  # fused norms, rotary embedding + KV write, SiLU-and-multiply
    runner = ModelRunner(model, num_blocks=BLOCKS, block_size=BS)
    runner.cuda_decoder = None  # the cascade path, also on CUDA
    if paged:  # what ModelRunner builds on CUDA: graphs there, eager launches on the CPU
        runner.cuda_decoder = CudaDecoder(
            model, runner.kv_caches, block_size=BS, max_blocks_per_seq=128,
            scratch_block=BLOCKS, max_batch=16, graphs=runner.device.type == "cuda",
        )
    tables = [[0, 1], [2], [3, 4, 5]]
    logits = runner.run([ForwardInput(tuple(p), 0, tuple(t)) for p, t in zip(prompts, tables)])
    # Two forks of prompt 0 share its two full blocks, so the batch is 5 rows: padded to 8.
    tokens = [list(p) for p in prompts] + [list(prompts[0]), list(prompts[0])]
    tables += [[0, 1], [0, 1]]
    logits = torch.cat([logits, logits[:1], logits[:1]])
    nxt, steps = 6, []
    for _ in range(7):
        inputs = []
        for row, t in enumerate(logits.argmax(-1).tolist()):
            tokens[row].append(t)
            while len(tables[row]) * BS < len(tokens[row]):
                tables[row].append(nxt)
                nxt += 1
            inputs.append(ForwardInput((t,), len(tokens[row]) - 1, tuple(tables[row])))
        logits = runner.run(inputs)
        steps.append(logits)
    return tokens, steps, runner.kv_caches


base_tokens, base_steps, base_kv = decode(paged=False)
tokens, steps, kv = decode(paged=True)
assert tokens == base_tokens, (tokens, base_tokens)
for got, want in zip(steps, base_steps):
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
for (k, v), (k0, v0) in zip(kv, base_kv):  # padding rows wrote the scratch block alone
    torch.testing.assert_close(k[:, :BLOCKS], k0[:, :BLOCKS])
    torch.testing.assert_close(v[:, :BLOCKS], v0[:, :BLOCKS])
    assert k[:, BLOCKS].abs().sum() > 0 and k0[:, BLOCKS].abs().sum() == 0
print("ok")
"""


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

FUSED_VS_TORCH = """
import os

import torch
import torch.nn.functional as F
from ponder.engine.torch_backend import fused_ops
from ponder.engine.torch_backend.attention import write_slots
from ponder.engine.torch_backend.model import RMSNorm, apply_rope, rope_tables
from ponder.engine.torch_backend.model_config import rope_inv_freq

on = torch.device(os.environ["CHECK_DEVICE"])
low = torch.float16 if on.type == "cpu" else torch.bfloat16
torch.manual_seed(0)
for dtype, tol in ((torch.float32, 1e-5), (low, 1e-2)):
    close = lambda a, b: torch.testing.assert_close(a.float(), b.float(), atol=tol, rtol=tol)
    n, hidden, hq, hkv, d, inter = 7, 96, 6, 2, 32, 80  # widths that are not powers of two
    norm = RMSNorm(hidden, 1e-5).to(on)
    norm.weight.data = torch.randn(hidden, device=on)
    norm = norm.to(dtype)
    x, res = (torch.randn(n, hidden, device=on, dtype=dtype) for _ in range(2))
    for residual in (None, res):
        want_out, want_res = norm.add(x, None if residual is None else residual.clone())
        got_out, got_res = fused_ops.add_rms_norm(
            x, None if residual is None else residual.clone(), norm.weight, 1e-5
        )
        close(got_out, want_out)
        close(got_res, want_res)
    qkv = torch.randn(n, (hq + 2 * hkv) * d, device=on, dtype=dtype)
    positions = torch.randint(0, 500, (n,), device=on)

    class C:
        head_dim, rope_theta, rope_scaling = d, 10000.0, None

    cos, sin = rope_tables(positions, rope_inv_freq(C).to(on), dtype)
    want_q = apply_rope(qkv[:, : hq * d].view(n, hq, d), cos, sin)
    want_k = apply_rope(qkv[:, hq * d : (hq + hkv) * d].view(n, hkv, d), cos, sin)
    v = qkv[:, (hq + hkv) * d :].view(n, hkv, d).clone()
    caches = [torch.zeros(hkv, 5, 4, d, device=on, dtype=dtype) for _ in range(4)]
    slots = torch.tensor([0, 3, 4, 9, 10, 17, 19], device=on)
    write_slots(caches[0], caches[1], slots, want_k, v)
    got = qkv.clone()
    fused_ops.rope_(got, cos, sin, hq, hkv, d, cache=(caches[2], caches[3], slots))
    close(got[:, : hq * d].view(n, hq, d), want_q)
    close(got[:, hq * d : (hq + hkv) * d].view(n, hkv, d), want_k)
    close(caches[2], caches[0])
    close(caches[3], caches[1])
    gate_up = torch.randn(n, 2 * inter, device=on, dtype=dtype)
    gate, up = gate_up.chunk(2, dim=-1)
    close(fused_ops.silu_mul(gate_up), F.silu(gate) * up)
print("ok")
"""


def run_child(source: str, device: str) -> None:
    """`source` in a fresh interpreter: under Triton's interpreter on the CPU, compiled on CUDA."""
    env = {**os.environ, "CHECK_DEVICE": device}
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-4000:]


@pytest.mark.parametrize("device", DEVICES)
def test_triton_kernel_matches_dense_kernel(device):
    """Ragged contexts, GQA (and MHA, and one kv head), block sizes 1/4/16, 1-16 context
    parts, stale table columns; fp32 to rounding, fp16 to fp16's precision."""
    run_child(KERNEL_VS_DENSE, device)


@pytest.mark.parametrize("device", DEVICES)
def test_fused_ops_match_torch_ops(device):
    """Fused add + RMSNorm (with and without a residual), rotary embedding with the KV write,
    SiLU-and-multiply: the portable torch ops' results, fp32 and half precision."""
    run_child(FUSED_VS_TORCH, device)


@pytest.mark.parametrize("device", DEVICES)
def test_cuda_decoder_matches_cascade_decode(device):
    """The runner's CUDA configuration (fused kernels, static buffers, tables written as wide
    as needed, padding rows; graphs on CUDA) gives the portable path's logits and greedy tokens
    on the embedded model, prefill and decode, with forks sharing a prompt's blocks, and padding
    touches only the scratch block."""
    run_child(DECODER_VS_CASCADE, device)
