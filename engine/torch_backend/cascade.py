"""Decode attention that reads a shared prompt once per group (cascade attention).

In a decode step (one new token per sequence) the sequences that fork from one prompt share its
full KV blocks by physical id. The dense kernel (`attention.paged_attention`) gathers every
sequence's whole block list every layer and attends over the longest padded context: B copies of
the same prompt. Here the batch is split per row into two key sets:

- shared: the longest run of leading blocks a group of rows holds in common, gathered once per
  group and multiplied against all the group's queries in one matmul (M rows x P keys instead of
  M separate 1 x P products);
- own: each row's blocks after its group's shared run (the generated tokens), gathered per row.

The two score sets are concatenated per row and normalised by one softmax, which is exactly
softmax attention over the union (the same result as merging two partial attentions by their
log-sum-exp). Rows that share nothing have an empty shared part. Gathers go into persistent
buffers (`Workspace`), so the large per-layer copies allocate nothing after warm-up.

`plan_decode` builds the per-step metadata (grouping is pure Python over block tables, once per
step); `cascade_attention` is the per-layer kernel. Prefill and mixed steps use the dense kernel;
tests check both agree. Portable torch only (CPU or CUDA); it schedules and samples nothing.
"""

from __future__ import annotations

import itertools
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ponder.engine.torch_backend.attention import write_slots


class Workspace:
    """Persistent flat buffers handed out as views, grown on demand and never shrunk, so the
    per-layer gathers of a decode step do not allocate (and do not cross glibc's mmap threshold,
    which returns large temporaries to the OS every step)."""

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype
        self._buffers: dict[str, torch.Tensor] = {}
        self.layout: _Layout | None = None  # the last decode step's, reused while it holds

    def get(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        numel = 1
        for n in shape:
            numel *= n
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel:
            buf = torch.empty(max(numel, 1) * 5 // 4 + 1, device=self.device, dtype=self.dtype)
            self._buffers[name] = buf
        return buf[:numel].view(shape)


@dataclass(frozen=True)
class DecodeMetadata:
    slot_mapping: torch.Tensor  # (B,) int64: slot of each row's new token
    own_tables: torch.Tensor  # (B, S_blocks) int64: blocks after the shared run, 0-padded
    own_mask: torch.Tensor  # (1, B, 1, S_blocks * bs) bool: key hidden (padding)
    shared_tables: torch.Tensor | None  # (G, P_blocks) int64, 0-padded; None: nothing shared
    shared_mask: torch.Tensor | None  # (1, B, 1, P_blocks * bs) bool: shared key hidden
    member_index: torch.Tensor | None  # (G * M,) int64: row of each group member, 0-padded
    member_slot: torch.Tensor | None  # (B,) int64: where each row sits in (G * M) order
    # (None for both when one group holds every row in order, as in best-of-n: no reordering)
    ungrouped: torch.Tensor | None  # (1, B, 1, 1) bool: row shares nothing; None if none such
    group_size: int  # M, members per group after padding
    workspace: Workspace  # the runner's persistent gather buffers


def _shared_blocks(tables: list[tuple[int, ...]], limits: list[int]) -> int:
    """Leading blocks all `tables` hold in common, capped by each member's limit."""
    common = os.path.commonprefix(tables)  # min/max of the tuples: C-level comparisons
    return min(len(common), *limits)


@dataclass(frozen=True)
class _Layout:
    """What a decode step's metadata takes from the block tables and each row's block count
    alone: unchanged from step to step until a row gains a block, so it is built once and
    reused (one comparison of the tables per step instead of a rebuild)."""

    tables: list[tuple[int, ...]]  # the key, with limits and block size
    limits: np.ndarray  # (B,) blocks wholly before each row's new token
    block_size: int
    min_shared_blocks: int
    start: np.ndarray  # (B,) position of each row's first own key
    slot_base: np.ndarray  # (B,) first slot of the block holding each row's new token
    keys: np.ndarray  # (S,) 0 .. S_blocks * bs - 1, own key positions after `start`
    own_tables: torch.Tensor  # (B, S_blocks) own blocks on the device, 0-padded
    shared_tables: torch.Tensor | None
    shared_mask: torch.Tensor | None
    member_index: torch.Tensor | None
    member_slot: torch.Tensor | None
    ungrouped: torch.Tensor | None
    group_size: int

    def fits(self, tables, limits: np.ndarray, block_size: int, min_shared: int) -> bool:
        return (
            self.block_size == block_size
            and self.min_shared_blocks == min_shared
            and self.tables == tables  # tuple comparisons in C; equal means equal batch size
            and bool((self.limits == limits).all())
        )


def plan_decode(
    context_lens: Sequence[int],
    block_tables: Sequence[Sequence[int]],
    block_size: int,
    workspace: Workspace,
    min_shared_blocks: int = 1,
) -> DecodeMetadata:
    """Group rows by their shared leading blocks and build the tensors one decode step needs.

    A shared block must lie wholly before every member's new token (its slot is written this
    step, so it sits in a private block after copy-on-write); rows are grouped by first block id,
    and a group shares its members' common leading blocks. Everything but the new tokens'
    positions comes from the tables and block counts (`_Layout`), which the workspace keeps
    while they hold; per step only the slots and the own-key mask are built."""
    tables = [tuple(t) for t in block_tables]
    ctx = np.array(context_lens, dtype=np.int64)  # (B,)
    limits = (ctx - 1) // block_size  # (B,)
    layout = workspace.layout
    if layout is None or not layout.fits(tables, limits, block_size, min_shared_blocks):
        layout = _layout(tables, limits, block_size, min_shared_blocks, workspace.device)
        workspace.layout = layout
    slots = layout.slot_base + (ctx - 1) % block_size  # (B,) slot of each new token
    own_mask = layout.keys >= (ctx - layout.start)[:, None]  # (B, S): hidden = past new token
    device = workspace.device
    return DecodeMetadata(
        slot_mapping=torch.from_numpy(slots).to(device),
        own_tables=layout.own_tables,
        own_mask=torch.from_numpy(own_mask[None, :, None, :]).to(device),
        shared_tables=layout.shared_tables,
        shared_mask=layout.shared_mask,
        member_index=layout.member_index,
        member_slot=layout.member_slot,
        ungrouped=layout.ungrouped,
        group_size=layout.group_size,
        workspace=workspace,
    )


def _layout(
    tables: list[tuple[int, ...]],
    limits: np.ndarray,
    block_size: int,
    min_shared: int,
    device: torch.device,
) -> _Layout:
    """Groups, shared runs and own blocks of `tables`; the grouping is Python over the tables,
    every per-row array one numpy expression (small torch ops cost several times more)."""
    batch = len(tables)
    full = _padded(tables)  # (B, T)
    groups = _groups(tables, full, limits, min_shared)
    shared_per_row = np.zeros(batch, dtype=np.int64)  # (B,) shared blocks of each row
    for rows, shared in groups:
        shared_per_row[rows] = shared
    # Own blocks: the table after the shared run, up to the block of the new token.
    num_own = limits + 1 - shared_per_row  # (B,)
    j = np.arange(int(num_own.max()))  # (S_blocks,)
    own_index = np.minimum(shared_per_row[:, None] + j, full.shape[1] - 1)  # (B, S_blocks)
    own = np.where(j < num_own[:, None], full[np.arange(batch)[:, None], own_index], 0)
    new_block = own[np.arange(batch), num_own - 1]  # (B,) the last own block holds the new token
    to = lambda x: None if x is None else torch.from_numpy(x).to(device)  # noqa: E731
    in_order = len(groups) == 1 and groups[0][0] == list(range(batch))
    shared = _shared_tensors(full, groups, shared_per_row, block_size) if groups else None
    return _Layout(
        tables=tables,
        limits=limits,
        block_size=block_size,
        min_shared_blocks=min_shared,
        start=shared_per_row * block_size,
        slot_base=new_block * block_size,
        keys=np.arange(own.shape[1] * block_size),
        own_tables=to(own),
        shared_tables=to(shared[0]) if shared else None,
        shared_mask=to(shared[1]) if shared else None,
        member_index=to(shared[2]) if shared and not in_order else None,
        member_slot=to(shared[3]) if shared and not in_order else None,
        ungrouped=to(_ungrouped(shared_per_row)) if groups else None,
        group_size=max(len(r) for r, _ in groups) if groups else 0,
    )


def _padded(tables: list[tuple[int, ...]]) -> np.ndarray:
    """(B, T) the ragged tables, 0-padded. One C-level pass over every id (numpy converts a
    nested list element by element, several times slower)."""
    lens = np.fromiter(map(len, tables), dtype=np.int64, count=len(tables))  # (B,)
    flat = np.fromiter(itertools.chain.from_iterable(tables), dtype=np.int64, count=lens.sum())
    full = np.zeros((len(tables), lens.max()), dtype=np.int64)
    full[np.arange(full.shape[1]) < lens[:, None]] = flat  # row-major: each row's ids in order
    return full


def _groups(
    tables: list[tuple[int, ...]], full: np.ndarray, limits: np.ndarray, min_shared: int
) -> list[tuple[list[int], int]]:
    """(member rows, shared blocks) of each group: rows with the same first block that hold at
    least `min_shared` leading blocks in common, each lying wholly before every member's new
    token (`limits` (B,) blocks; `full` (B, T) is `tables` padded)."""
    if len(tables) > 1 and (full[:, 0] == full[0, 0]).all():  # one prompt (best-of-n): one group
        shared = min(len(os.path.commonprefix(tables)), int(limits.min()))
        return [(list(range(len(tables))), shared)] if shared >= min_shared else []
    by_first: dict[int, list[int]] = defaultdict(list)
    for row, t in enumerate(tables):
        by_first[t[0]].append(row)
    groups = []
    for rows in by_first.values():
        if len(rows) < 2:
            continue
        shared = _shared_blocks([tables[r] for r in rows], limits[rows].tolist())
        if shared >= min_shared:
            groups.append((rows, shared))
    return groups


def _ungrouped(shared_per_row: np.ndarray) -> np.ndarray | None:
    if shared_per_row.all():
        return None
    return (shared_per_row == 0)[None, :, None, None]  # (1, B, 1, 1)


def _shared_tensors(full: np.ndarray, groups, shared_per_row: np.ndarray, block_size: int):
    """(G, P_blocks) tables, (1, B, 1, P) hidden keys, (G * M,) member rows, (B,) member slots,
    from the 0-padded tables `full` (B, T)."""
    size = max(len(rows) for rows, _ in groups)
    blocks = max(n for _, n in groups)
    shared_tables = np.zeros((len(groups), blocks), dtype=np.int64)  # (G, P_blocks)
    members = np.zeros((len(groups), size), dtype=np.int64)  # (G, M)
    slot = np.zeros(len(full), dtype=np.int64)  # rows outside every group: slot 0, no key seen
    for g, (rows, n) in enumerate(groups):
        shared_tables[g, :n] = full[rows[0], :n]
        members[g, :] = rows[0]  # padding repeats a member, unread
        members[g, : len(rows)] = rows
        slot[rows] = g * size + np.arange(len(rows))
    keys = np.arange(blocks * block_size)  # (P,)
    hidden = keys >= shared_per_row[:, None] * block_size  # (B, P)
    return shared_tables, hidden[None, :, None, :], members.reshape(-1), slot


def _gather(cache: torch.Tensor, tables: torch.Tensor, ws: Workspace, name: str) -> torch.Tensor:
    """Blocks `tables` (R, nb) of `cache` (Hkv, num_blocks, bs, D) -> (Hkv, R, nb * bs, D), into
    a persistent buffer (one contiguous copy per block and head)."""
    rows, nb = tables.shape
    hkv, _, bs, d = cache.shape
    out = ws.get(name, (hkv, rows * nb, bs, d))
    torch.index_select(cache, 1, tables.reshape(-1), out=out)
    return out.view(hkv, rows, nb * bs, d)  # (Hkv, R, T, D)


def _rows(x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """Rows (dim 1) of x in `index` order; contiguous either way (views are reshaped next)."""
    return x.contiguous() if index is None else x.index_select(1, index)


def cascade_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: DecodeMetadata,
    scale: float,
) -> torch.Tensor:
    """q: (B, Hq, D); k, v: (B, Hkv, D); caches (Hkv, num_blocks, bs, D) -> (B, Hq, D).

    Head-major throughout, (Hkv, rows, ...), so every matmul reads the gathered keys in place."""
    hkv, _, _, d = k_cache.shape
    batch, hq, _ = q.shape
    rep = hq // hkv
    ws = meta.workspace
    write_slots(k_cache, v_cache, meta.slot_mapping, k, v)
    qh = (q * scale).view(batch, hkv, rep, d).transpose(0, 1)  # (Hkv, B, rep, D)
    # 2. Own keys: each row's blocks after its shared run.
    own_k = _gather(k_cache, meta.own_tables, ws, "own_k")  # (Hkv, B, S, D)
    own_v = _gather(v_cache, meta.own_tables, ws, "own_v")
    own = torch.matmul(qh, own_k.transpose(-1, -2))  # (Hkv, B, rep, S)
    own.masked_fill_(meta.own_mask, float("-inf"))
    if meta.shared_tables is None:
        probs = torch.softmax(own, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(probs, own_v)  # (Hkv, B, rep, D)
        return out.transpose(0, 1).reshape(batch, hq, d)
    # 3. Shared keys: gathered once per group, one (M * rep) x P product per group and kv head.
    sh_k = _gather(k_cache, meta.shared_tables, ws, "shared_k")  # (Hkv, G, P, D)
    sh_v = _gather(v_cache, meta.shared_tables, ws, "shared_v")
    groups, shared_len = sh_k.shape[1:3]
    size = meta.group_size
    qg = _rows(qh, meta.member_index).view(hkv, groups, size * rep, d)  # (Hkv, G, M rep, D)
    shared = torch.matmul(qg, sh_k.transpose(-1, -2))  # (Hkv, G, M rep, P)
    shared = _rows(shared.view(hkv, groups * size, rep, shared_len), meta.member_slot)
    shared.masked_fill_(meta.shared_mask, float("-inf"))  # (Hkv, B, rep, P)
    # 4. One softmax over both key sets, then each set's weighted values, summed.
    scores = torch.cat((shared, own), dim=-1)  # (Hkv, B, rep, P + S)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    p_shared = _rows(probs[..., :shared_len], meta.member_index)  # (Hkv, G M, rep, P)
    out = torch.matmul(p_shared.view(hkv, groups, size * rep, shared_len), sh_v)  # (Hkv,G,M rep,D)
    out = _rows(out.view(hkv, groups * size, rep, d), meta.member_slot)  # (Hkv, B, rep, D)
    if meta.ungrouped is not None:  # their member slot belongs to another row: drop it
        out.masked_fill_(meta.ungrouped, 0.0)
    out += torch.matmul(probs[..., shared_len:], own_v)
    return out.transpose(0, 1).reshape(batch, hq, d)  # (B, Hq, D)
