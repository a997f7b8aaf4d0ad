"""Paged attention over a ragged batch, with torch's scaled_dot_product_attention.

A batch is B sequences contributing N new tokens in total (a prefill chunk or one decode token
each). The new keys and values are first written into the paged cache, then each sequence's
blocks are gathered whole through its block table (one contiguous copy per block, not per
token) and attended to with a mask that encodes causality, each sequence's length and the unused
tail of its last block. Writing before reading means a sequence can read
blocks another sequence of the same batch fills. This is the portable reference kernel (CPU and
CUDA alike); it allocates, schedules and samples nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AttentionMetadata:
    query_lens: list[int]  # new tokens per sequence
    context_lens: list[int]  # tokens with KV after this step (cached + new), per sequence
    block_tables: torch.Tensor  # (B, max_blocks) int64, padded with 0
    slot_mapping: torch.Tensor  # (N,) int64: block_id * block_size + offset per new token
    query_index: torch.Tensor  # (B, max_q) int64: flat token index of each padded query, 0 pad
    query_valid: torch.Tensor  # (B, max_q) bool
    mask: torch.Tensor  # (B, 1, max_q, max_blocks * block_size) bool: query may see key


@dataclass(frozen=True)
class PagedDecodeMetadata:
    """One decode step's inputs for the Triton kernel (paged_decode.py), which every layer
    reads: static buffers when a CUDA graph replays them (cuda_decode.py)."""

    slot_mapping: torch.Tensor  # (B,) int64: slot of each row's new token
    block_tables: torch.Tensor  # (B, W) int32; a row's first ceil(len / block_size) are read
    context_lens: torch.Tensor  # (B,) int32: tokens with KV after this step, >= 1
    splits: int  # context parts per row (flash decoding); 1: no merge kernel


def build_metadata(
    query_lens: Sequence[int],
    context_lens: Sequence[int],
    block_tables: Sequence[Sequence[int]],
    block_size: int,
    device: torch.device,
) -> AttentionMetadata:
    """Everything the attention layers of one step need, built once per step (vectorised)."""
    batch = len(query_lens)
    q_lens = torch.tensor(query_lens, dtype=torch.long)  # (B,)
    ctx_lens = torch.tensor(context_lens, dtype=torch.long)  # (B,)
    max_q = int(q_lens.max())
    max_blocks = max(len(t) for t in block_tables)
    tables = torch.tensor(
        [list(t) + [0] * (max_blocks - len(t)) for t in block_tables], dtype=torch.long
    )  # (B, max_blocks); padding reads block 0, masked out
    j = torch.arange(max_q)[None, :]  # (1, max_q)
    valid = j < q_lens[:, None]  # (B, max_q)
    starts = torch.cumsum(q_lens, 0) - q_lens  # (B,) flat offset of each sequence's first query
    query_index = torch.where(valid, starts[:, None] + j, 0)  # (B, max_q)
    # Query j of sequence b sits at absolute position ctx_b - q_b + j and sees keys 0..that.
    q_pos = ctx_lens[:, None] - q_lens[:, None] + j  # (B, max_q)
    keys = torch.arange(max_blocks * block_size)[None, None, :]  # (1, 1, T)
    mask = keys <= q_pos[:, :, None]  # (B, max_q, T)
    mask[:, :, 0] |= ~valid  # padded query rows see one key: no all-masked NaN rows
    pos = q_pos[valid]  # (N,) absolute positions in flat token order
    rows = torch.arange(batch)[:, None].expand(batch, max_q)[valid]  # (N,)
    slots = tables[rows, pos // block_size] * block_size + pos % block_size  # (N,)
    return AttentionMetadata(
        list(query_lens),
        list(context_lens),
        tables.to(device),
        slots.to(device),
        query_index.to(device),
        valid.to(device),
        mask[:, None].to(device),
    )


def make_kv_cache(
    num_layers: int,
    num_blocks: int,
    block_size: int,
    num_kv_heads: int,
    head_dim: int,
    dtype: torch.dtype,
    device,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, a (keys, values) pair of (Hkv, num_blocks, block_size, D) tensors: head-major,
    so gathering blocks along dim 1 yields (Hkv, rows, T, D), which batched matmuls read in place
    (a block-major layout would need a transposing copy of every gather)."""
    shape = (num_kv_heads, num_blocks, block_size, head_dim)
    return [
        (
            torch.zeros(shape, dtype=dtype, device=device),
            torch.zeros(shape, dtype=dtype, device=device),
        )
        for _ in range(num_layers)
    ]


def copy_blocks(caches: list[tuple[torch.Tensor, torch.Tensor]], pairs: Sequence[tuple[int, int]]):
    """Copy-on-write: duplicate block src into dst in every layer, keys and values."""
    if not pairs:
        return
    device = caches[0][0].device
    src = torch.tensor([p[0] for p in pairs], dtype=torch.long, device=device)
    dst = torch.tensor([p[1] for p in pairs], dtype=torch.long, device=device)
    for k_cache, v_cache in caches:  # (Hkv, num_blocks, bs, D)
        k_cache[:, dst] = k_cache[:, src]
        v_cache[:, dst] = v_cache[:, src]


def write_slots(k_cache, v_cache, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """1. Write new keys/values (N, Hkv, D) into their slots of the (Hkv, blocks, bs, D) caches
    (before any read: a sequence attends to its own new tokens)."""
    num_kv, _, _, head_dim = k_cache.shape
    k_cache.view(num_kv, -1, head_dim).index_copy_(1, slots, k.transpose(0, 1))  # (Hkv, slots, D)
    v_cache.view(num_kv, -1, head_dim).index_copy_(1, slots, v.transpose(0, 1))


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
) -> torch.Tensor:
    """q: (N, Hq, D); k, v: (N, Hkv, D); caches: (Hkv, num_blocks, block_size, D) -> (N, Hq, D)."""
    num_kv, num_blocks, block_size, head_dim = k_cache.shape
    write_slots(k_cache, v_cache, meta.slot_mapping, k, v)
    # 2. Gather every sequence's blocks, whole: index_select of B * max_blocks contiguous
    # blocks, not of every token's slot (16x fewer, larger copies at block size 16).
    batch, max_blocks = meta.block_tables.shape
    flat_blocks = meta.block_tables.reshape(-1)  # (B * max_blocks,)
    context = max_blocks * block_size
    keys = k_cache.index_select(1, flat_blocks).view(num_kv, batch, context, head_dim)
    values = v_cache.index_select(1, flat_blocks).view(num_kv, batch, context, head_dim)
    keys, values = keys.transpose(0, 1), values.transpose(0, 1)  # (B, Hkv, T, D)
    # 3. Pad the ragged queries into (B, Hq, max_q, D); a pure decode step (one query per
    # sequence, N == B) needs no padding.
    max_q = meta.query_index.shape[1]
    if max_q == 1:
        queries = q[:, :, None, :]  # (B, Hq, 1, D)
    else:
        queries = q.index_select(0, meta.query_index.reshape(-1)).view(batch, max_q, *q.shape[1:])
        queries = queries.transpose(1, 2)  # (B, Hq, max_q, D)
    # Grouped-query attention: SDPA maps each kv head to its group of query heads itself.
    out = F.scaled_dot_product_attention(
        queries,
        keys,
        values,
        attn_mask=meta.mask,
        scale=scale,
        enable_gqa=queries.shape[1] != num_kv,
    )
    # 4. Back to the flat token order: (B, Hq, max_q, D) -> (N, Hq, D).
    if max_q == 1:
        return out[:, :, 0, :]
    return out.transpose(1, 2)[meta.query_valid]  # rows in (b, j) order == flat token order
