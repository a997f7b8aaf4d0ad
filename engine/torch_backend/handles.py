"""Handles: the engine core's table of live branches, the one owner of their KV blocks.

A handle is what a Branch names inside the engine: its token ids, its block table and how many
of its tokens have KV. Each handle belongs to an owner (a search context or a request), so
closing an owner, or losing it to the garbage collector, releases exactly what it held. The
leak check of the whole engine is "no live handles and no block in use".

A root has no KV. When more than one sequence will read a root's prompt (it is forked, or
extended more than once), the core computes it once with a prefill sequence; the root and every
handle forked from it meanwhile are the prefill's `members`, and draws that arrive meanwhile are
`parked` on it. When the prefill finishes, each live member and each parked draw forks its table
and the prefill's own reference is dropped: ref counts in the block manager are the only count.

Constrained decoding: a handle carries the immutable grammar state after its tokens. A fork
shares it, as it shares the blocks (copy-on-write: a draw's first token makes a new state and
leaves the shared one untouched); a finished draw's handle takes its sequence's state.

Idle KV: when a waiting sequence cannot fit and nothing running can be preempted, the core drops
the KV of idle handles, least recently used first (`make_room`): the handle
keeps its token ids and grammar state, its blocks are freed (full ones keep their prefix-cache
hash), and its next extend or fork computes it again, counted as recompute, not as prompt.

Only the engine loop's thread touches this module (through EngineCore); it is not thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ponder.engine.torch_backend.commands import Draw, Sink
from ponder.engine.torch_backend.kv_cache import BlockManager
from ponder.engine.torch_backend.sequence import Sequence

if TYPE_CHECKING:
    from ponder.engine.structured.state import GrammarState


@dataclass(frozen=True, slots=True)
class Pending:
    """A draw accepted by the core, with what it needs until it becomes a Sequence."""

    owner: int
    draw: Draw
    sink: Sink | None
    arrived_at: float  # perf_counter() when its Extend command ran
    arrived_step: int  # the engine step count then


@dataclass(slots=True)
class Prefill:
    """A root's prompt being computed once for every handle and draw that will read it."""

    seq: Sequence  # computes token_ids[:-1]
    token_ids: tuple[int, ...]  # the root's tokens
    grammar: GrammarState | None  # the root's grammar state, for the parked draws
    members: set[int] = field(default_factory=set)  # handles waiting for this KV
    parked: list[Pending] = field(default_factory=list)

    @property
    def wanted(self) -> bool:
        return bool(self.members or self.parked)


@dataclass(slots=True)
class Handle:
    owner: int
    token_ids: tuple[int, ...]
    block_table: list[int] = field(default_factory=list)
    num_computed: int = 0
    num_hashed_blocks: int = 0
    prefill: Prefill | None = None  # set while a prefill computes this handle's tokens
    grammar: GrammarState | None = None  # constrained decoding: the state after token_ids
    evicted: bool = False  # its KV was dropped under pool pressure: computing it is recompute
    last_used: int = 0  # HandleTable's clock when it was made or last read (LRU eviction)

    @property
    def needs_prefill(self) -> bool:
        """More than the last token lacks KV (a root, or a fork of one)."""
        return self.num_computed < len(self.token_ids) - 1


class HandleTable:
    def __init__(self, blocks: BlockManager):
        self.blocks = blocks
        self._handles: dict[int, Handle] = {}
        self._clock = 0  # ticks on every add and get: the LRU order of eviction

    def __len__(self) -> int:
        return len(self._handles)

    def __contains__(self, handle_id: int) -> bool:
        return handle_id in self._handles

    def get(self, handle_id: int, owner: int) -> Handle:
        handle = self._handles.get(handle_id)
        if handle is None or handle.owner != owner:
            raise ValueError(f"branch {handle_id} is unknown to this context or was released")
        self._clock += 1
        handle.last_used = self._clock
        return handle

    def of_owner(self, owner: int) -> list[int]:
        return [i for i, h in self._handles.items() if h.owner == owner]

    def add(self, handle_id: int, handle: Handle) -> None:
        if handle_id in self._handles:
            raise RuntimeError(f"handle {handle_id} exists already (ids must be unique)")
        self._clock += 1
        handle.last_used = self._clock
        self._handles[handle_id] = handle

    def make_room(self, token_ids: list[int]) -> list[int]:
        """Evict idle handles, least recently used first (ties: lowest id), until the pool can
        allocate `token_ids` or none holds blocks; returns the evicted ids in order. A handle
        whose blocks are shared frees only what nobody else holds, so it may take several."""
        holding = sorted((h.last_used, i) for i, h in self._handles.items() if h.block_table)
        evicted = []
        for _, handle_id in holding:
            if self.blocks.can_allocate(token_ids):
                break
            self._evict(self._handles[handle_id])
            evicted.append(handle_id)
        return evicted

    def _evict(self, handle: Handle) -> None:
        """Drop a handle's KV, keeping its tokens: its next read computes them again."""
        self.blocks.free(handle.block_table)
        handle.block_table = []
        handle.num_computed = 0
        handle.num_hashed_blocks = 0
        handle.evicted = True

    def adopt(self, seq: Sequence) -> None:
        """A finished sequence becomes handle `seq.child`, taking over its blocks."""
        table, seq.block_table = seq.block_table, []
        self.add(
            seq.child,
            Handle(
                seq.owner,
                tuple(seq.token_ids),
                table,
                seq.num_computed,
                seq.num_hashed_blocks,
                grammar=seq.grammar,
            ),
        )

    def fork(self, source_id: int, handle_ids: tuple[int, ...], owner: int) -> None:
        source = self.get(source_id, owner)
        for handle_id in handle_ids:
            kid = Handle(
                owner,
                source.token_ids,
                self.blocks.fork(source.block_table),
                source.num_computed,
                source.num_hashed_blocks,
                source.prefill,
                source.grammar,  # shared, like the blocks: states are immutable
                source.evicted,
            )
            if source.prefill is not None:
                source.prefill.members.add(handle_id)
            self.add(handle_id, kid)

    def release(self, handle_id: int, owner: int) -> Prefill | None:
        """Forget a handle (idempotent) and free its blocks; returns its prefill if that is now
        wanted by nobody (the caller aborts it)."""
        handle = self._handles.get(handle_id)
        if handle is None or handle.owner != owner:
            return None
        del self._handles[handle_id]
        if handle.block_table:
            self.blocks.free(handle.block_table)
        prefill = handle.prefill
        if prefill is None:
            return None
        prefill.members.discard(handle_id)
        return None if prefill.wanted else prefill

    def take_table(self, handle_id: int) -> Handle:
        """Remove a handle and hand its table to the caller (a draw that consumes it)."""
        return self._handles.pop(handle_id)

    def finish_prefill(self, prefill: Prefill) -> None:
        """Give every live member the prefill's KV (the prefill keeps its own reference until
        the caller has forked it to the parked draws and frees it)."""
        seq = prefill.seq
        for handle_id in prefill.members:
            handle = self._handles.get(handle_id)
            if handle is None or handle.prefill is not prefill:
                continue
            handle.block_table = self.blocks.fork(seq.block_table)
            handle.num_computed = seq.num_computed
            handle.num_hashed_blocks = seq.num_hashed_blocks
            handle.prefill = None
            handle.evicted = False
        prefill.members.clear()

    def fail_prefill(self, prefill: Prefill) -> None:
        """The prefill failed: its members stay roots, to be prefilled again by a later call."""
        for handle_id in prefill.members:
            handle = self._handles.get(handle_id)
            if handle is not None and handle.prefill is prefill:
                handle.prefill = None
        prefill.members.clear()
