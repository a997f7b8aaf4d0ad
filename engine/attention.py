"""Paged attention over a ragged batch, with torch's scaled_dot_product_attention.

A batch is B sequences contributing N new tokens in total (a prefill chunk or one decode token
each). The new keys and values are first written into the paged cache, then each sequence's
keys and values are gathered through its block table and attended to with a mask that encodes
both causality and each sequence's length. Writing before reading means a sequence can read
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
    mask: torch.Tensor  # (B, 1, max_q, max_ctx) bool: True where a query may see a key


def build_metadata(
    query_lens: Sequence[int],
    context_lens: Sequence[int],
    block_tables: Sequence[Sequence[int]],
    block_size: int,
    device: torch.device,
) -> AttentionMetadata:
    """Everything the attention layers of one step need, built once per step."""
    batch = len(query_lens)
    max_q, max_ctx = max(query_lens), max(context_lens)
    max_blocks = max(len(t) for t in block_tables)
    tables = torch.zeros(batch, max_blocks, dtype=torch.long)
    for i, t in enumerate(block_tables):
        tables[i, : len(t)] = torch.tensor(t, dtype=torch.long)
    slots, query_index = [], torch.zeros(batch, max_q, dtype=torch.long)
    valid = torch.zeros(batch, max_q, dtype=torch.bool)
    mask = torch.zeros(batch, 1, max_q, max_ctx, dtype=torch.bool)
    offset = 0
    for i, (q, ctx) in enumerate(zip(query_lens, context_lens, strict=True)):
        positions = range(ctx - q, ctx)
        slots += [block_tables[i][p // block_size] * block_size + p % block_size for p in positions]
        query_index[i, :q] = torch.arange(offset, offset + q)
        valid[i, :q] = True
        # Query j sits at absolute position ctx - q + j and sees keys 0..that position.
        keys = torch.arange(max_ctx)
        mask[i, 0, :q] = keys[None, :] <= torch.arange(ctx - q, ctx)[:, None]
        mask[i, 0, q:, 0] = True  # padded query rows see one key: no all-masked NaN rows
        offset += q
    return AttentionMetadata(
        list(query_lens),
        list(context_lens),
        tables.to(device),
        torch.tensor(slots, dtype=torch.long, device=device),
        query_index.to(device),
        valid.to(device),
        mask.to(device),
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
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
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
    for k_cache, v_cache in caches:
        k_cache[dst] = k_cache[src]
        v_cache[dst] = v_cache[src]


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
) -> torch.Tensor:
    """q: (N, Hq, D); k, v: (N, Hkv, D); caches: (num_blocks, block_size, Hkv, D) -> (N, Hq, D)."""
    num_blocks, block_size, num_kv, head_dim = k_cache.shape
    # 1. Write the new keys/values into their slots.
    k_cache.view(-1, num_kv, head_dim)[meta.slot_mapping] = k
    v_cache.view(-1, num_kv, head_dim)[meta.slot_mapping] = v
    # 2. Gather every sequence's context through its block table.
    batch, max_blocks = meta.block_tables.shape
    max_ctx = meta.mask.shape[-1]
    keys = k_cache[meta.block_tables].view(batch, max_blocks * block_size, num_kv, head_dim)
    values = v_cache[meta.block_tables].view(batch, max_blocks * block_size, num_kv, head_dim)
    keys = keys[:, :max_ctx].transpose(1, 2)  # (B, Hkv, T, D)
    values = values[:, :max_ctx].transpose(1, 2)  # (B, Hkv, T, D)
    # 3. Pad the ragged queries into (B, Hq, max_q, D).
    queries = q[meta.query_index].transpose(1, 2)  # (B, Hq, max_q, D)
    num_q = queries.shape[1]
    if num_q != num_kv:  # grouped-query attention: repeat each kv head for its query heads
        keys = keys.repeat_interleave(num_q // num_kv, dim=1)  # (B, Hq, T, D)
        values = values.repeat_interleave(num_q // num_kv, dim=1)
    out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=meta.mask, scale=scale)
    # 4. Back to the flat token order: (B, Hq, max_q, D) -> (N, Hq, D).
    out = out.transpose(1, 2)[meta.query_valid]  # rows in (b, j) order == flat token order
    return out
