"""Sequence: one unit of scheduled work, and the stop rule that ends it.

A Sequence is a token list with a block table, a count of tokens whose KV is computed, and a
budget of new tokens to sample. `max_new_tokens == 0` makes it a prefill: compute the KV of all
its tokens and sample nothing (how a search root shared by several continuations is computed
once; engine/torch_backend/handles.py). Tokens from index `num_computed` on have no KV yet;
while decoding that is exactly the last sampled token. A sequence's random stream is its `seed`:
the uniform behind its k-th new token is draw k of that seed (engine/torch_backend/sampling.py),
so recomputing its KV never changes what it samples. Sequences are mutable and owned by the
engine core while they run; nothing outside the engine sees them (strategies see Branches).

Finish reasons use the protocol's vocabulary (ponder.engine.protocol.FINISH_REASONS).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ponder.engine.torch_backend.sampling import RowParams
from ponder.engine.torch_backend.stop import StopRule  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from ponder.engine.structured.state import GrammarState


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    seq_id: int
    token_ids: list[int]
    stop: StopRule
    params: RowParams
    seed: int | None = None  # its random stream in [0, 2**64); None: a fresh random seed
    num_computed: int = 0
    block_table: list[int] = field(default_factory=list)
    num_top_logprobs: int = 0
    owner: int = 0  # the search or request it belongs to (fair scheduling, accounting)
    child: int = -1  # the handle id its result becomes (-1: a prefill)
    num_hashed_blocks: int = 0  # leading blocks of the table already in the prefix cache
    grammar: GrammarState | None = None  # constrained decoding: the state after token_ids
    status: Status = Status.WAITING
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    error: str | None = None
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[int, float]] = field(default_factory=list)
    # Accounting: prefix-cache hits at allocation, and context tokens (tokens that existed
    # before this sequence started, other than the pending last one) computed by a forward.
    cached_tokens: int = 0  # counted at its first allocation only
    recomputed_tokens: int = 0
    lost_kv: bool = False  # its blocks were taken (preemption, eviction) at least once
    computes_prompt: bool = False  # its first pass over the prompt is compute, not recompute
    recomputes_prompt: bool = False  # it computes an evicted handle's context again
    scheduled_at: float | None = None  # perf_counter() when first given a seat
    start_len: int = field(init=False)

    def __post_init__(self) -> None:
        if not self.token_ids:
            raise ValueError("a sequence needs at least one token")
        if self.seed is None:  # unseeded: a stream of its own, like any other
            self.seed = random.getrandbits(64)
        self.start_len = len(self.token_ids)

    @property
    def num_new_tokens(self) -> int:
        return len(self.token_ids) - self.start_len

    @property
    def new_token_ids(self) -> list[int]:
        return self.token_ids[self.start_len :]

    @property
    def num_uncomputed(self) -> int:
        return len(self.token_ids) - self.num_computed

    @property
    def is_prefill(self) -> bool:
        return self.stop.max_new_tokens == 0

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED

    def forget_kv(self) -> list[int]:
        """Drop the KV (preemption or eviction): it will be recomputed, mostly from the prefix
        cache. Returns the table for the caller to free."""
        table, self.block_table = self.block_table, []
        self.num_computed = 0
        self.num_hashed_blocks = 0
        return table
