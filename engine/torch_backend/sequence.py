"""Sequence: one unit of scheduled work, and the stop rule that ends it.

A Sequence is a token list with a block table, a count of tokens whose KV is computed, and a
budget of new tokens to sample. `max_new_tokens == 0` makes it a prefill job: compute the KV of
all its tokens, keep the logits of the last position, and stop (how a search root is prefilled
once before its branches fork). A sequence started with `first_logits` (a fork of a prefilled
branch) samples its first token from them without a forward pass, so n continuations of a
prompt share every prompt block. Tokens from index `num_computed` on have no KV yet; while
decoding that is exactly the last sampled token. Sequences are mutable and owned by the
scheduler while they run; nothing outside the engine sees them (strategies see Branches).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch
from ponder.engine.torch_backend.sampling import RowParams
from ponder.engine.torch_backend.stop import StopRule  # noqa: F401  (re-exported)


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
    generator: torch.Generator | None = None
    num_computed: int = 0
    block_table: list[int] = field(default_factory=list)
    num_top_logprobs: int = 0
    first_logits: torch.Tensor | None = None  # (V,) logits to sample the first token from
    last_logits: torch.Tensor | None = None  # (V,) set on a prefill job when it finishes
    status: Status = Status.WAITING
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    error: str | None = None
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[int, float]] = field(default_factory=list)
    # Accounting: prefix-cache hits at allocation, and context tokens (tokens that existed
    # before this sequence started, other than the pending last one) computed by a forward.
    cached_tokens: int = 0
    recomputed_tokens: int = 0
    start_len: int = field(init=False)

    def __post_init__(self) -> None:
        if not self.token_ids:
            raise ValueError("a sequence needs at least one token")
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
    def samples_without_forward(self) -> bool:
        return self.first_logits is not None and self.num_uncomputed == 0

    @property
    def is_prefill_job(self) -> bool:
        return self.stop.max_new_tokens == 0

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED
