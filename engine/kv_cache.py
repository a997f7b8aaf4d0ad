"""BlockManager: the paged KV pool's bookkeeping (block ids, ref counts, prefix cache).

A pool of `num_blocks` blocks of `block_size` token slots. Callers own block tables: plain lists
of block ids, one per sequence or branch, entry i holding positions [i * block_size,
(i + 1) * block_size). This module counts references and remembers what full blocks hold:

- `allocate` gives a new sequence its blocks, reusing leading full blocks from the prefix cache
  (cross-request sharing); at least one token is always left to compute, for its logits;
- `fork` shares a whole table: ref counts +1, no allocation, no copy (intra-search sharing);
- `append_slots` makes room for new positions; a shared block about to be written is replaced by
  a fresh one (copy-on-write) and the (src, dst) copies are returned for the model runner;
- `free` drops references; a block at ref count 0 joins the tail of the free queue and keeps its
  hash, so it stays a cache hit until it is reused from the head (least recently freed first);
- `commit` enters blocks into the prefix cache once they are full and computed.

Prefix-cache keys are chained hashes, hash((parent's hash, block tokens)). A hit also compares the
stored token ids and the identity of the prefix before the block, so a hash collision is a miss,
never a wrong hit: each committed block carries a `prefix_id` naming the exact token prefix it
ends, and a cached block is only found after the very prefix it was computed after.

It deliberately does not touch tensors (the model runner writes and copies KV), choose what runs
or what is preempted (the scheduler's policy), or make release idempotent (callers free each
table exactly once). Not thread-safe: the engine loop's thread is its only caller.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Allocation:
    block_ids: tuple[int, ...]  # the new sequence's block table
    num_cached_tokens: int  # leading tokens whose KV is already in the cache (whole blocks)


@dataclass(frozen=True, slots=True)
class KVStats:
    total: int
    used: int  # ref count > 0
    cached_free: int  # free, still registered in the prefix cache (a hit until evicted)
    free: int


def chain_hash(parent: int | None, tokens: tuple[int, ...]) -> int:
    """Prefix-cache key of a full block: its tokens chained to the key of the block before it."""
    return hash((parent, tokens))


@dataclass(slots=True)
class _Block:
    block_id: int
    ref_count: int = 0
    # Set by commit once the block is full and computed, kept while it waits in the free queue,
    # cleared when it is reused. A block is registered when the hash map points at it; a
    # duplicate of a registered block (or a collision's loser) has a hash but is not registered.
    hash: int | None = None
    token_ids: tuple[int, ...] | None = None  # registered blocks only
    prefix_id: int = 0  # names the exact token prefix ending with this block; 0: not committed
    parent_id: int = 0  # prefix_id of the prefix before this block; 0: it is the first block


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int):
        for name, value in (("num_blocks", num_blocks), ("block_size", block_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._blocks = [_Block(i) for i in range(num_blocks)]
        # Ref-count-0 blocks, least recently freed first. An OrderedDict, so that a cache hit on a
        # free block takes it out of the queue in O(1).
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._by_hash: dict[int, int] = {}  # chained hash -> the block registered under it
        self._last_prefix_id = 0

    # ------------------------------------------------------------------ inspection

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def stats(self) -> KVStats:
        free = len(self._free)
        cached = sum(1 for b in self._free if self._is_registered(self._blocks[b]))
        return KVStats(self.num_blocks, self.num_blocks - free, cached, free)

    def ref_count(self, block_id: int) -> int:
        return self._block(block_id).ref_count

    def block_hash(self, block_id: int) -> int | None:
        """The hash a block is registered under in the prefix cache; None if it is not."""
        block = self._block(block_id)
        return block.hash if self._is_registered(block) else None

    def block_tokens(self, block_id: int) -> tuple[int, ...] | None:
        """The token ids a registered block holds; None if it is not registered."""
        block = self._block(block_id)
        return block.token_ids if self._is_registered(block) else None

    def free_queue(self) -> list[int]:
        """Free block ids in eviction order (first = next to be reused)."""
        return list(self._free)

    # ------------------------------------------------------------------ allocation

    def can_allocate(self, token_ids: Sequence[int]) -> bool:
        return self._allocation_plan(token_ids)[1] <= len(self._free)

    def allocate(self, token_ids: Sequence[int]) -> Allocation | None:
        """Blocks for a new sequence of len(token_ids) tokens, or None if the pool is short."""
        hits, from_free = self._allocation_plan(token_ids)
        if from_free > len(self._free):
            return None
        # Hits leave the free queue before any fresh block is taken, so none of them is evicted.
        for block_id in hits:
            block = self._blocks[block_id]
            if block.ref_count == 0:
                del self._free[block_id]
            block.ref_count += 1
        fresh = [self._take() for _ in range(self._blocks_for(len(token_ids)) - len(hits))]
        return Allocation(tuple(hits + fresh), len(hits) * self.block_size)

    def _allocation_plan(self, token_ids: Sequence[int]) -> tuple[list[int], int]:
        """The cached leading blocks, and how many blocks the free queue must supply: fresh ones
        plus the hits that sit in it at ref count 0."""
        if len(token_ids) == 0:
            raise ValueError("cannot allocate blocks for an empty sequence: pass its token ids")
        hits = self._cached_prefix(token_ids)
        revived = sum(1 for b in hits if self._blocks[b].ref_count == 0)
        return hits, self._blocks_for(len(token_ids)) - len(hits) + revived

    def _cached_prefix(self, token_ids: Sequence[int]) -> list[int]:
        """Leading full blocks found in the prefix cache, leaving at least one token to compute."""
        bs = self.block_size
        hits: list[int] = []
        parent_hash, parent_id = None, 0
        for i in range((len(token_ids) - 1) // bs):
            tokens = tuple(token_ids[i * bs : (i + 1) * bs])
            h = chain_hash(parent_hash, tokens)
            block_id = self._by_hash.get(h)
            if block_id is None:
                break
            block = self._blocks[block_id]
            if block.token_ids != tokens or block.parent_id != parent_id:
                break  # a hash collision: a miss, never a block computed after other tokens
            hits.append(block_id)
            parent_hash, parent_id = h, block.prefix_id
        return hits

    # ------------------------------------------------------------------ growth and sharing

    def can_append(self, block_table: list[int], num_tokens: int, num_new: int) -> bool:
        shared, extra = self._append_plan(block_table, num_tokens, num_new)
        return len(shared) + extra <= len(self._free)

    def append_slots(
        self, block_table: list[int], num_tokens: int, num_new: int
    ) -> list[tuple[int, int]] | None:
        """Slots for positions [num_tokens, num_tokens + num_new) of a sequence whose first
        num_tokens positions are written. Grows `block_table` in place and replaces each shared
        block those positions fall into (copy-on-write). Returns the (src, dst) KV copies the
        model runner must make before the forward, or None, changing nothing, if the pool is
        short."""
        shared, extra = self._append_plan(block_table, num_tokens, num_new)
        if len(shared) + extra > len(self._free):
            return None
        copies = []
        for i in shared:
            src, dst = block_table[i], self._take()
            self._blocks[src].ref_count -= 1  # it was shared: another table still holds it
            block_table[i] = dst
            if i * self.block_size < num_tokens:  # it holds written positions: copy them
                copies.append((src, dst))
        block_table.extend(self._take() for _ in range(extra))
        return copies

    def _append_plan(
        self, block_table: list[int], num_tokens: int, num_new: int
    ) -> tuple[list[int], int]:
        """Indices of the shared blocks the new positions fall into, and how many to append."""
        bs = self.block_size
        if num_tokens < 0 or num_new < 0 or num_tokens > len(block_table) * bs:
            raise ValueError(
                f"cannot append {num_new} slots after {num_tokens} tokens to a table of "
                f"{len(block_table)} blocks of {bs}: counts must be >= 0 and fit the table"
            )
        if num_new == 0:
            return [], 0
        first, end = num_tokens // bs, self._blocks_for(num_tokens + num_new)
        if first < len(block_table) and self._blocks[block_table[first]].prefix_id:
            raise ValueError(
                f"position {num_tokens} falls in block {block_table[first]}, which is full and "
                "committed: num_tokens is behind the positions this table has computed"
            )
        shared = [
            i
            for i in range(first, min(end, len(block_table)))
            if self._blocks[block_table[i]].ref_count > 1
        ]
        return shared, max(0, end - len(block_table))

    def fork(self, block_table: Sequence[int]) -> list[int]:
        """A new table sharing every block of `block_table`: no allocation, no copy."""
        for block in self._held(block_table, "fork"):
            block.ref_count += 1
        return list(block_table)

    def free(self, block_table: Sequence[int]) -> None:
        """Drop the table's references; blocks reaching 0 stay cached until evicted."""
        # Last block first: a sequence's tail is evicted before its prefix, which is what other
        # requests share.
        for block in reversed(self._held(block_table, "free")):
            if block.ref_count == 0:  # the table lists this block twice
                raise RuntimeError(f"block {block.block_id} appears twice in a freed table")
            block.ref_count -= 1
            if block.ref_count == 0:
                self._free[block.block_id] = None

    def _held(self, block_table: Sequence[int], verb: str) -> list[_Block]:
        blocks = [self._block(b) for b in block_table]
        for block in blocks:
            if block.ref_count == 0:
                raise RuntimeError(
                    f"cannot {verb} block {block.block_id}: its ref count is already 0 (double "
                    "free: the table was freed before, or was never allocated)"
                )
        return blocks

    # ------------------------------------------------------------------ prefix cache

    def commit(
        self, block_table: Sequence[int], token_ids: Sequence[int], num_computed: int
    ) -> None:
        """Enter every block that is now full and computed into the prefix cache. Blocks already
        committed are skipped without hashing, so calling this every step is cheap."""
        bs = self.block_size
        if not 0 <= num_computed <= min(len(token_ids), len(block_table) * bs):
            raise ValueError(
                f"num_computed ({num_computed}) must be within the {len(token_ids)} token ids "
                f"and the {len(block_table)} blocks of {bs} of the table"
            )
        # 1. Committed blocks form a prefix of every table: step back from the last full block to
        #    where they end (usually no step at all).
        start = num_computed // bs
        while start > 0 and not self._blocks[block_table[start - 1]].prefix_id:
            start -= 1
        parent = self._blocks[block_table[start - 1]] if start else None
        parent_hash, parent_id = (parent.hash, parent.prefix_id) if parent else (None, 0)
        # 2. Commit the rest: register each block, or record it as a duplicate of a registered one.
        for i in range(start, num_computed // bs):
            block = self._blocks[block_table[i]]
            tokens = tuple(token_ids[i * bs : (i + 1) * bs])
            block.hash, block.parent_id = chain_hash(parent_hash, tokens), parent_id
            owner_id = self._by_hash.get(block.hash)
            if owner_id is None:
                self._by_hash[block.hash] = block.block_id
                block.token_ids, block.prefix_id = tokens, self._new_prefix_id()
            else:
                owner = self._blocks[owner_id]
                same = owner.token_ids == tokens and owner.parent_id == parent_id
                # The same prefix computed twice shares the owner's prefix id; a collision's
                # loser gets one that no lookup will ever reach. Either way the map stays.
                block.prefix_id = owner.prefix_id if same else self._new_prefix_id()
            parent_hash, parent_id = block.hash, block.prefix_id

    # ------------------------------------------------------------------ internals

    def _block(self, block_id: int) -> _Block:
        if not 0 <= block_id < self.num_blocks:
            raise ValueError(f"block id {block_id} is not in this pool of {self.num_blocks}")
        return self._blocks[block_id]

    def _blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _is_registered(self, block: _Block) -> bool:
        return block.hash is not None and self._by_hash.get(block.hash) == block.block_id

    def _new_prefix_id(self) -> int:
        self._last_prefix_id += 1
        return self._last_prefix_id

    def _take(self) -> int:
        """The least recently freed block, dropped from the prefix cache, at ref count 1."""
        block_id, _ = self._free.popitem(last=False)
        block = self._blocks[block_id]
        if self._is_registered(block):
            pass
        block.hash, block.token_ids, block.prefix_id, block.parent_id = None, None, 0, 0
        block.ref_count = 1
        return block_id
