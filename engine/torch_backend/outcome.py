"""Outcome: what a finished draw reports, and the prompt-token accounting behind it.

A sequence that computes a prompt (a prefill, or a draw that reads its root once) counts its
first pass as computed prompt tokens and only later passes (after a preemption) as recomputed;
a continuation of computed KV counts prefix-cache hits and recomputes only. Prefill accounting
is owed to the owner and reported with its next finished draw (commands.Continuation), so a
search's SearchStats add up to its prompt once, however many branches read the prompt. A handle
whose KV was evicted (engine/torch_backend/handles.py) counts its second computation as recompute.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ponder.engine.torch_backend.commands import Continuation
from ponder.engine.torch_backend.handles import Pending
from ponder.engine.torch_backend.sequence import Sequence


@dataclass(frozen=True, slots=True)
class Tally:
    cached: int = 0
    computed: int = 0
    recomputed: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.cached + other.cached,
            self.computed + other.computed,
            self.recomputed + other.recomputed,
        )


def prompt_tally(seq: Sequence, prompt_len: int) -> Tally:
    """Accounting of a sequence that computed a prompt of `prompt_len` tokens (a prefill
    computes all but the last, which every draw computes again; it is counted here, once)."""
    first_pass = max(0, seq.start_len - 1 - seq.cached_tokens)
    return Tally(
        cached=seq.cached_tokens,
        computed=prompt_len - seq.cached_tokens,
        recomputed=max(0, seq.recomputed_tokens - first_pass),
    )


def recompute_tally(seq: Sequence, prompt_len: int) -> Tally:
    """Accounting of a sequence that computed again the context of an evicted handle: the
    `prompt_len - 1` tokens before the pending last one (which every draw computes anyway) are
    recompute, less its prefix-cache hits; the prompt was counted when first computed."""
    t = prompt_tally(seq, prompt_len - 1)
    return Tally(recomputed=t.computed + t.recomputed)


def context_tally(seq: Sequence, prompt_len: int) -> Tally:
    """prompt_tally, or recompute_tally for a sequence rebuilding an evicted handle."""
    if seq.recomputes_prompt:
        return recompute_tally(seq, prompt_len)
    return prompt_tally(seq, prompt_len)


def continuation(seq: Sequence, pending: Pending, tally: Tally, step: int) -> Continuation:
    scheduled = seq.scheduled_at if seq.scheduled_at is not None else time.perf_counter()
    return Continuation(
        child=seq.child,
        new_token_ids=tuple(seq.new_token_ids),
        logprobs=tuple(seq.logprobs),
        top_logprobs=tuple(seq.top_logprobs),
        finish_reason=seq.finish_reason,
        stop_reason=seq.stop_reason,
        cached_prompt_tokens=tally.cached,
        computed_prompt_tokens=tally.computed,
        recomputed_tokens=tally.recomputed,
        queue_seconds=max(0.0, scheduled - pending.arrived_at),
        latency_steps=step - pending.arrived_step,
    )
