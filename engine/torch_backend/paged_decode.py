"""Paged decode attention in Triton: one query per sequence, reading KV blocks in place.

The CUDA decode kernel. Each sequence's keys and values stay where the paged cache holds them:
the kernel follows the block table itself, so nothing is gathered into a temporary (the portable
kernels in attention.py and cascade.py copy blocks every layer). Grouped-query attention is
native: one program serves the `rep` query heads of one kv head, so each key is read once per
kv head, not once per query head.

Flash-decoding split: a row's context is cut into `splits` equal parts, one program each
(grid: rows x kv heads x splits); each writes a partial (running max, sum of exponentials,
unnormalised output), and a second kernel merges the parts by their log-sum-exp. With one split
the first kernel normalises and writes the output itself. The split count is fixed per call
(the host picks it from the batch so the GPU has enough programs), and each row divides its own
context by it, so the launch shape never depends on context lengths: CUDA graphs can capture it.

Runs wherever Triton does: CUDA, or the CPU under TRITON_INTERPRET=1, which is how the test
suite checks it against the portable kernel. Shapes: q (B, Hq, D); caches (Hkv, num_blocks,
block_size, D) as attention.make_kv_cache lays them out; block_tables (B, W) int32/int64 whose
first ceil(context_len / block_size) entries are read; context_lens (B,) int32, each >= 1.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from ponder.engine.torch_backend.attention import PagedDecodeMetadata


@triton.jit
def _decode_part(
    q_ptr, k_ptr, v_ptr, tables_ptr, lens_ptr, out_ptr, m_ptr, l_ptr, acc_ptr,
    scale,
    stride_qb, stride_qh, stride_ob, stride_oh,
    stride_kh, stride_kb, stride_ks,
    stride_tb,
    REP: tl.constexpr, REP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, TILE: tl.constexpr, SPLITS: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    ctx = tl.load(lens_ptr + row)
    tiles = tl.cdiv(ctx, TILE)
    per_split = tl.cdiv(tiles, SPLITS)
    first = split * per_split
    last = tl.minimum(first + per_split, tiles)
    r = tl.arange(0, REP_PAD)  # query heads of this kv head
    d = tl.arange(0, HEAD_DIM)
    t = tl.arange(0, TILE)  # keys of one tile
    heads = kv_head * REP + r
    q = tl.load(
        q_ptr + row * stride_qb + heads[:, None] * stride_qh + d[None, :],
        mask=(r < REP)[:, None],
        other=0.0,
    )  # (REP_PAD, D)
    m = tl.full((REP_PAD,), float("-inf"), tl.float32)
    s = tl.zeros((REP_PAD,), tl.float32)
    acc = tl.zeros((REP_PAD, HEAD_DIM), tl.float32)
    kv_base = kv_head * stride_kh
    tile = first
    while tile < last:  # (a while loop: the interpreter cannot range over program ids)
        pos = tile * TILE + t  # (TILE,) absolute key positions
        live = pos < ctx
        block = tl.load(tables_ptr + row * stride_tb + pos // BLOCK_SIZE, mask=live, other=0)
        offsets = kv_base + block * stride_kb + (pos % BLOCK_SIZE) * stride_ks  # (TILE,)
        k = tl.load(k_ptr + offsets[:, None] + d[None, :], mask=live[:, None], other=0.0)
        scores = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # (REP_PAD, TILE)
        scores = tl.where(live[None, :], scores * scale, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, 1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(scores - m_new[:, None])  # (REP_PAD, TILE)
        s = s * alpha + tl.sum(p, 1)
        v = tl.load(v_ptr + offsets[:, None] + d[None, :], mask=live[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m = m_new
        tile += 1
    keep = r < REP
    if SPLITS == 1:  # the only part: normalise and write the output
        out = acc / s[:, None]
        out_at = out_ptr + row * stride_ob + heads[:, None] * stride_oh + d[None, :]
        tl.store(out_at, out.to(out_ptr.dtype.element_ty), mask=keep[:, None])
    else:  # partial results, (B, Hq, SPLITS[, D]) float32; an empty part has s = 0, m = -inf
        part = (row * (tl.num_programs(1) * REP) + heads) * SPLITS + split  # (REP_PAD,)
        tl.store(m_ptr + part, m, mask=keep)
        tl.store(l_ptr + part, s, mask=keep)
        tl.store(acc_ptr + part[:, None] * HEAD_DIM + d[None, :], acc, mask=keep[:, None])


@triton.jit
def _merge_parts(
    m_ptr, l_ptr, acc_ptr, out_ptr, stride_ob, stride_oh,
    HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, SPLITS: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    head = tl.program_id(1)
    sp = tl.arange(0, SPLITS)
    d = tl.arange(0, HEAD_DIM)
    base = (row * HEADS + head) * SPLITS
    m = tl.load(m_ptr + base + sp)  # (SPLITS,)
    s = tl.load(l_ptr + base + sp)
    acc = tl.load(acc_ptr + (base + sp)[:, None] * HEAD_DIM + d[None, :])  # (SPLITS, D)
    top = tl.max(m, 0)
    w = tl.where(s > 0, tl.exp(m - top), 0.0)  # empty parts weigh nothing (and avoid -inf - -inf)
    total = tl.sum(w * s, 0)
    out = tl.sum(w[:, None] * acc, 0) / total
    tl.store(out_ptr + row * stride_ob + head * stride_oh + d, out.to(out_ptr.dtype.element_ty))


TILE = 64  # keys per loop iteration


def choose_splits(batch: int, num_kv_heads: int, processors: int) -> int:
    """Context parts per row so that about two programs per processor run: a power of two in
    [1, 16] (1 once rows x kv heads fill the GPU alone)."""
    splits = 1
    while splits < 16 and batch * num_kv_heads * splits < 2 * processors:
        splits *= 2
    return splits


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: PagedDecodeMetadata,
    scale: float,
) -> torch.Tensor:
    """q: (B, Hq, D), any row and head strides -> (B, Hq, D), attending over each row's first
    context_lens keys. The new token's key and value must already be in the cache
    (attention.write_slots or fused_ops.rope_)."""
    batch, heads, head_dim = q.shape
    num_kv, _, block_size, _ = k_cache.shape
    rep = heads // num_kv
    if head_dim & (head_dim - 1) or head_dim < 16:
        raise ValueError(f"paged decode needs a power-of-two head_dim >= 16, got {head_dim}")
    if k_cache.stride(3) != 1 or q.stride(2) != 1:
        raise ValueError("paged decode needs the head dimension contiguous")
    out = torch.empty(batch, heads, head_dim, device=q.device, dtype=q.dtype)
    splits = meta.splits
    if splits > 1:
        m = torch.empty(batch, heads, splits, device=q.device, dtype=torch.float32)
        s = torch.empty_like(m)
        acc = torch.empty(batch, heads, splits, head_dim, device=q.device, dtype=torch.float32)
    else:
        m = s = acc = out  # unused
    tables = meta.block_tables
    _decode_part[(batch, num_kv, splits)](
        q, k_cache, v_cache, tables, meta.context_lens, out, m, s, acc,
        scale,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        tables.stride(0),
        REP=rep, REP_PAD=max(16, triton.next_power_of_2(rep)), HEAD_DIM=head_dim,
        BLOCK_SIZE=block_size, TILE=TILE, SPLITS=splits,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",  # fp32: no TF32 rounding
    )  # fmt: skip
    if splits > 1:
        _merge_parts[(batch, heads)](
            m, s, acc, out, out.stride(0), out.stride(1),
            HEADS=heads, HEAD_DIM=head_dim, SPLITS=splits,
        )  # fmt: skip
    return out
