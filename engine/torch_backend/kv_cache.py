"""BlockManager: the paged KV pool's bookkeeping (block ids, ref counts, prefix hashes).

A pool of `num_blocks` blocks of `block_size` token slots. Callers own block tables (plain
lists of block ids, one per sequence or branch); this module only counts references:

- `allocate` gives a new sequence its blocks, reusing leading full blocks whose chained hash is
  registered and whose stored token ids match (cross-request prefix sharing);
- `fork` shares a whole table (ref counts +1, no allocation, no copy);
- `append_slots` grows a table, copying on write a shared, partially filled last block (the copy
  itself is the model runner's job: it gets the (src, dst) pairs). One write needs no copy: a
  single slot that is the shared block's next unwritten one, or its last written one holding the
  same token. Every holder of the block agrees on that slot (it is the same token after the same
  prefix), so it is filled in place: the last prompt token of a prefill's forks, which each fork
  computes again, lands in the shared block instead of one copy of it per fork. Each block
  remembers how many of its slots are written and the token in its last written slot;
- `free` drops references; a block at ref count 0 joins the tail of the free queue and keeps its
  hash, so it stays a cache hit until it is evicted from the head (least recently freed first);
- `commit` hashes blocks once they are full and computed (incrementally: the caller keeps
  the count of blocks already hashed).

It knows nothing of tensors or scheduling policy. Not thread-safe: the engine loop's thread is
its only caller.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Allocation:
    block_ids: tuple[int, ...]  # the new sequence's block table
    num_cached_tokens: int  # leading tokens whose KV is already in the cache


@dataclass(frozen=True, slots=True)
class KVStats:
    total: int
    used: int  # ref count > 0
    cached_free: int  # free, still holding a hash (reusable until evicted)
    free: int


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._refs = [0] * num_blocks
        self._hash: list[int | None] = [None] * num_blocks
        self._tokens: list[tuple[int, ...] | None] = [None] * num_blocks
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self._by_hash: dict[int, int] = {}
        # Slots written (or about to be, by the pass being scheduled) and the token in the last
        # of them (None: not known), for the in-place write of a shared slot (append_slots).
        self._fill = [0] * num_blocks
        self._last: list[int | None] = [None] * num_blocks

    # ------------------------------------------------------------------ inspection

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def stats(self) -> KVStats:
        cached = sum(1 for b in self._free if self._is_registered(b))
        free = len(self._free)
        return KVStats(self.num_blocks, self.num_blocks - free, cached, free)

    def _is_registered(self, block: int) -> bool:
        h = self._hash[block]
        return h is not None and self._by_hash.get(h) == block

    def ref_count(self, block_id: int) -> int:
        return self._refs[block_id]

    def block_hash(self, block_id: int) -> int | None:
        return self._hash[block_id]

    def free_queue(self) -> list[int]:
        """Free block ids in eviction order (first = next to be reused)."""
        return list(self._free)

    def reset_prefix_cache(self) -> int:
        """Forget the content of every free block (blocks in use keep theirs, so sequences
        running now still share); returns how many cached blocks were dropped. Later prompts
        then recompute their prefixes: for benchmarks and after a weight update."""
        dropped = 0
        for block in self._free:
            h = self._hash[block]
            if h is None:
                continue
            if self._by_hash.get(h) == block:
                del self._by_hash[h]
                dropped += 1
            self._hash[block] = None
            self._tokens[block] = None
        return dropped

    # ------------------------------------------------------------------ allocation

    def _chain(self, parent: int | None, tokens: tuple[int, ...]) -> int:
        """128-bit chained hash of (parent hash, block tokens). A match is also checked against
        the stored tokens; the strong hash makes a parent-chain collision (which that check
        cannot see) practically impossible, unlike Python's 64-bit hash()."""
        data = (parent or 0).to_bytes(16, "little") + array("q", tokens).tobytes()
        return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "little")

    def _prefix_hits(self, token_ids: Sequence[int]) -> list[int]:
        """Leading full blocks already cached, leaving at least one token to compute."""
        bs = self.block_size
        hits: list[int] = []
        parent = None
        for start in range(0, (len(token_ids) - 1) // bs * bs, bs):
            chunk = tuple(token_ids[start : start + bs])
            h = self._chain(parent, chunk)
            block = self._by_hash.get(h)
            if block is None or self._tokens[block] != chunk:  # a hash collision is a miss
                break
            hits.append(block)
            parent = h
        return hits

    def _blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _allocation_need(self, token_ids: Sequence[int], hits: list[int]) -> int:
        """Free-queue blocks an allocation with these prefix hits would take."""
        fresh = self._blocks_needed(len(token_ids)) - len(hits)
        revived = sum(1 for b in hits if self._refs[b] == 0)  # hits taken from the free queue
        return fresh + revived

    def can_allocate(self, token_ids: Sequence[int]) -> bool:
        if not token_ids:
            raise ValueError("cannot allocate blocks for an empty sequence")
        hits = self._prefix_hits(token_ids)
        return self._allocation_need(token_ids, hits) <= len(self._free)

    def allocate(self, token_ids: Sequence[int]) -> Allocation | None:
        """A new table for `token_ids` (prefix hits shared), or None if the pool cannot hold
        it. The prompt is hashed once."""
        if not token_ids:
            raise ValueError("cannot allocate blocks for an empty sequence")
        hits = self._prefix_hits(token_ids)
        if self._allocation_need(token_ids, hits) > len(self._free):
            return None
        for b in hits:
            if self._refs[b] == 0:
                del self._free[b]
            self._refs[b] += 1
        fresh = [self._take() for _ in range(self._blocks_needed(len(token_ids)) - len(hits))]
        self._mark_written(hits + fresh, len(hits) * self.block_size, len(token_ids), token_ids)
        return Allocation(tuple(hits + fresh), len(hits) * self.block_size)

    def _take(self) -> int:
        block, _ = self._free.popitem(last=False)
        old = self._hash[block]
        if old is not None:
            if self._by_hash.get(old) == block:
                del self._by_hash[old]
            self._hash[block] = None
            self._tokens[block] = None
        self._refs[block] = 1
        self._fill[block] = 0
        self._last[block] = None
        return block

    def _mark_written(
        self, table: Sequence[int], start: int, end: int, token_ids: Sequence[int] | None
    ) -> None:
        """Record that positions [start, end) of the table are written (their KV is computed
        by the pass being scheduled). Marking before the pass over-states a block's fill only
        while its one holder is that pass's sequence: it only ever turns an in-place write into
        a copy."""
        bs = self.block_size
        for i in range(start // bs, -(-end // bs)):
            block = table[i]
            top = min(end, (i + 1) * bs)
            if top - i * bs >= self._fill[block]:
                self._fill[block] = top - i * bs
                self._last[block] = token_ids[top - 1] if token_ids is not None else None

    def _append_need(
        self,
        block_table: list[int],
        num_tokens: int,
        num_new: int,
        token_ids: Sequence[int] | None = None,
    ) -> tuple[int, bool]:
        if num_tokens < 0 or num_new < 0 or num_tokens > len(block_table) * self.block_size:
            raise ValueError(
                f"bad append: {num_tokens} tokens (+{num_new}) on a table of "
                f"{len(block_table)} blocks of {self.block_size}"
            )
        needed = max(0, self._blocks_needed(num_tokens + num_new) - len(block_table))
        offset = num_tokens % self.block_size
        cow = (
            num_new > 0
            and offset != 0
            and self._refs[block_table[num_tokens // self.block_size]] > 1
            and not self._agreed_slot(block_table, num_tokens, num_new, token_ids)
        )
        return needed + cow, cow

    def _agreed_slot(
        self, block_table: list[int], num_tokens: int, num_new: int, token_ids
    ) -> bool:
        """The write touches one slot of its shared block, and every holder agrees on that
        slot's KV: it is the block's next unwritten slot (claimed now, with its token), or its
        last written one, holding the same token."""
        offset = num_tokens % self.block_size
        if token_ids is None or min(num_new, self.block_size - offset) != 1:
            return False
        block = block_table[num_tokens // self.block_size]
        fill = self._fill[block]
        token = token_ids[num_tokens]
        return offset == fill or (offset == fill - 1 and self._last[block] == token)

    def can_append(
        self,
        block_table: list[int],
        num_tokens: int,
        num_new: int,
        token_ids: Sequence[int] | None = None,
    ) -> bool:
        return self._append_need(block_table, num_tokens, num_new, token_ids)[0] <= len(self._free)

    def append_slots(
        self,
        block_table: list[int],
        num_tokens: int,
        num_new: int,
        token_ids: Sequence[int] | None = None,
    ) -> list[tuple[int, int]] | None:
        """Slots for positions [num_tokens, num_tokens + num_new); the CoW copies to apply.
        `token_ids` (the sequence's tokens, covering those positions) lets a write of an agreed
        slot into a shared block happen in place; without them a shared block is always
        copied."""
        need, cow = self._append_need(block_table, num_tokens, num_new, token_ids)
        if need > len(self._free):
            return None
        copies = []
        if num_new and not cow and num_tokens // self.block_size < len(block_table):
            self._forget_overwritten(block_table, num_tokens, num_new, token_ids)
        if cow:
            index = num_tokens // self.block_size
            src = block_table[index]
            dst = self._take()
            self._refs[src] -= 1  # still > 0: it was shared
            block_table[index] = dst
            copies.append((src, dst))
        while len(block_table) * self.block_size < num_tokens + num_new:
            block_table.append(self._take())
        self._mark_written(block_table, num_tokens, num_tokens + num_new, token_ids)
        return copies

    def _forget_overwritten(
        self, block_table: list[int], num_tokens: int, num_new: int, token_ids
    ) -> None:
        """A sole holder rewriting slots another holder wrote before it left (an agreed-slot
        claim that then diverged) with other content: the block's cached identity is stale, so
        it leaves the prefix cache and its fill drops back to the write."""
        block = block_table[num_tokens // self.block_size]
        offset = num_tokens % self.block_size
        if offset >= self._fill[block] or self._agreed_slot(
            block_table, num_tokens, num_new, token_ids
        ):
            return
        h = self._hash[block]
        if h is not None and self._by_hash.get(h) == block:
            del self._by_hash[h]
        self._hash[block] = None
        self._tokens[block] = None
        self._fill[block] = offset
        self._last[block] = None

    def _check_ids(self, block_table: Sequence[int]) -> None:
        for b in block_table:
            if not 0 <= b < self.num_blocks:
                raise RuntimeError(f"block id {b} is outside the pool [0, {self.num_blocks})")

    def fork(self, block_table: Sequence[int]) -> list[int]:
        """Share a whole table: every block's ref count +1. Validated first, so a bad table
        changes nothing."""
        self._check_ids(block_table)
        for b in block_table:
            if self._refs[b] <= 0:
                raise RuntimeError(f"fork of block {b}, which nobody holds (ref count 0)")
        for b in block_table:
            self._refs[b] += 1
        return list(block_table)

    def free(self, block_table: Sequence[int]) -> None:
        """Drop one reference per entry. Validated first, so a double free changes nothing."""
        self._check_ids(block_table)
        drops: dict[int, int] = {}
        for b in block_table:
            drops[b] = drops.get(b, 0) + 1
            if self._refs[b] < drops[b]:
                raise RuntimeError(f"double free of block {b}: its ref count is already 0")
        # Last block first, so a sequence's tail is evicted before its (more shareable) prefix.
        for b in reversed(block_table):
            self._refs[b] -= 1
            if self._refs[b] == 0:
                self._free[b] = None

    def commit(
        self,
        block_table: Sequence[int],
        token_ids: Sequence[int],
        num_computed: int,
        first: int = 0,
    ) -> int:
        """Hash the full, computed blocks of the table from index `first` on (the blocks before
        it are hashed already); return the new count of leading hashed blocks. A caller that
        keeps that count pays O(new blocks) per step, not O(length)."""
        bs = self.block_size
        full = min(num_computed, len(token_ids)) // bs
        parent = self._hash[block_table[first - 1]] if first > 0 else None
        for i in range(first, full):
            block = block_table[i]
            h = self._hash[block]
            if h is None:
                chunk = tuple(token_ids[i * bs : (i + 1) * bs])
                h = self._chain(parent, chunk)
                owner = self._by_hash.get(h)
                if owner is not None and self._tokens[owner] != chunk:
                    return i  # a true hash collision: keep the map as it is
                # A duplicate of a registered block keeps its hash (so it is never hashed
                # again) but is not registered: lookups find the owner.
                self._hash[block] = h
                self._tokens[block] = chunk
                if owner is None:
                    self._by_hash[h] = block
            parent = h
        return max(first, full)
