"""Fused Triton kernels for the CUDA forward pass: one launch where torch needs several.

A decode step of a small model on a GPU is bound by kernel launches, not by bytes: torch's
RMSNorm in bf16 is seven kernels, the rotary embedding four, SiLU-and-multiply three, the KV
write four. These kernels do the same arithmetic in one launch each, rounding where torch
rounds (to the activation dtype after each op that torch runs as its own kernel), so they agree
with the portable path (model.py's torch ops) to the last bit in most elements and otherwise by
one rounding step:

- `add_rms_norm(x, residual, weight, eps)`: residual += x (or residual = x), then RMSNorm of it,
  the residual updated in place: (normed, residual).
- `rope_(qkv, cos, sin, num_q, num_kv, head_dim, cache=None)`: rotate the q and k heads of a
  fused q/k/v projection in place; with `cache=(k_cache, v_cache, slots)` also write each token's
  rotated key and its value into its slot of the paged cache.
- `silu_mul(gate_up)`: silu(gate) * up for a fused gate/up projection (N, 2I) -> (N, I).

Runs where Triton does: CUDA, or the CPU under TRITON_INTERPRET=1 (the tests). Rows are tokens;
one program per row (and per column tile for silu_mul).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _add_rms_norm(
    x_ptr, res_ptr, w_ptr, out_ptr, cols, eps,
    HAS_RES: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    c = tl.arange(0, BLOCK)
    live = c < cols
    x = tl.load(x_ptr + row * cols + c, mask=live, other=0.0)
    if HAS_RES:  # torch's add rounds to the activation dtype
        h = (x.to(tl.float32) + tl.load(res_ptr + row * cols + c, mask=live, other=0.0)).to(x.dtype)
        tl.store(res_ptr + row * cols + c, h, mask=live)
    else:
        h = x
    hf = h.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(hf * hf, 0) / cols + eps)
    normed = (hf * rstd).to(x.dtype)
    w = tl.load(w_ptr + c, mask=live, other=0.0)
    tl.store(out_ptr + row * cols + c, (w.to(tl.float32) * normed).to(x.dtype), mask=live)


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H) rows: residual = residual + x (in place; x itself when residual is None), then
    weight * rmsnorm(residual). Returns (normed, residual)."""
    rows, cols = x.shape
    out = torch.empty_like(x)
    has_res = residual is not None
    _add_rms_norm[(rows,)](
        x, residual if has_res else x, weight, out, cols, eps,
        HAS_RES=has_res, BLOCK=triton.next_power_of_2(cols),
    )  # fmt: skip
    return out, (residual if has_res else x)


@triton.jit
def _rope(
    qkv_ptr, cos_ptr, sin_ptr, slots_ptr, k_cache_ptr, v_cache_ptr,
    row_stride, trig_stride, cache_head_stride,
    NUM_Q: tl.constexpr, NUM_KV: tl.constexpr, HEADS_PAD: tl.constexpr, KV_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr, WRITE: tl.constexpr,
):  # fmt: skip
    tok = tl.program_id(0)
    d = tl.arange(0, HEAD_DIM)
    partner = (d + HEAD_DIM // 2) % HEAD_DIM  # rotate-half: the sign lives in `sin`
    h = tl.arange(0, HEADS_PAD)  # q heads, then k heads
    rotated = h < NUM_Q + NUM_KV
    base = qkv_ptr + tok * row_stride
    x = tl.load(base + h[:, None] * HEAD_DIM + d[None, :], mask=rotated[:, None], other=0.0)
    xp = tl.load(base + h[:, None] * HEAD_DIM + partner[None, :], mask=rotated[:, None], other=0.0)
    cos = tl.load(cos_ptr + tok * trig_stride + d).to(tl.float32)
    sin = tl.load(sin_ptr + tok * trig_stride + d).to(tl.float32)
    first = (x.to(tl.float32) * cos[None, :]).to(x.dtype)  # torch: x * cos, then addcmul
    out = (first.to(tl.float32) + xp.to(tl.float32) * sin[None, :]).to(x.dtype)
    tl.store(base + h[:, None] * HEAD_DIM + d[None, :], out, mask=rotated[:, None])
    if WRITE:  # the rotated keys and the values into this token's slot of the paged cache
        slot = tl.load(slots_ptr + tok)
        is_k = (h >= NUM_Q) & rotated
        k_at = k_cache_ptr + (h - NUM_Q)[:, None] * cache_head_stride + slot * HEAD_DIM + d[None, :]
        tl.store(k_at, out, mask=is_k[:, None])
        kv = tl.arange(0, KV_PAD)
        v = tl.load(
            base + (NUM_Q + NUM_KV + kv)[:, None] * HEAD_DIM + d[None, :],
            mask=(kv < NUM_KV)[:, None],
            other=0.0,
        )
        v_at = v_cache_ptr + kv[:, None] * cache_head_stride + slot * HEAD_DIM + d[None, :]
        tl.store(v_at, v, mask=(kv < NUM_KV)[:, None])


def rope_(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_q: int,
    num_kv: int,
    head_dim: int,
    cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> None:
    """Rotate q and k heads of qkv (N, (num_q + 2 num_kv) * D) in place, with cos and signed
    sin (N, 1, D) from model.rope_tables; `cache` = (k_cache, v_cache, slots (N,)) also writes
    keys and values into (Hkv, blocks, block_size, D) caches."""
    tokens = qkv.shape[0]
    if qkv.stride(1) != 1 or cos.stride(2) != 1:
        raise ValueError("rope_ needs rows with contiguous columns")
    k_cache, v_cache, slots = cache if cache is not None else (qkv, qkv, qkv)
    _rope[(tokens,)](
        qkv, cos, sin, slots, k_cache, v_cache,
        qkv.stride(0), cos.stride(0), k_cache.stride(0) if cache is not None else 0,
        NUM_Q=num_q, NUM_KV=num_kv, HEADS_PAD=triton.next_power_of_2(num_q + num_kv),
        KV_PAD=triton.next_power_of_2(num_kv), HEAD_DIM=head_dim, WRITE=cache is not None,
    )  # fmt: skip


@triton.jit
def _silu_mul(gu_ptr, out_ptr, inter, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    live = c < inter
    g = tl.load(gu_ptr + row * 2 * inter + c, mask=live, other=0.0)
    u = tl.load(gu_ptr + row * 2 * inter + inter + c, mask=live, other=0.0)
    gf = g.to(tl.float32)
    s = (gf / (1.0 + tl.exp(-gf))).to(g.dtype)  # torch's silu, rounded, then the multiply
    tl.store(
        out_ptr + row * inter + c, (s.to(tl.float32) * u.to(tl.float32)).to(g.dtype), mask=live
    )


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """(N, 2I) contiguous -> (N, I): silu(first half) * second half."""
    rows, width = gate_up.shape
    inter = width // 2
    out = torch.empty(rows, inter, dtype=gate_up.dtype, device=gate_up.device)
    block = min(1024, triton.next_power_of_2(inter))
    _silu_mul[(rows, triton.cdiv(inter, block))](gate_up, out, inter, BLOCK=block)
    return out
