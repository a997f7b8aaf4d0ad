"""The SearchContext verbs: the whole interface a search strategy sees.

    root(prompt)            -> Branch       the prompt as a branch (no compute yet)
    fork(branch, n)         -> [Branch]     n handles sharing the branch's KV: no compute, no copy
    await extend(branches)  -> [Branch]     one new branch per input, generated up to a stop
                                            (step delimiter, EOS, max tokens); inputs stay valid
    release(branches)                       idempotent; frees what only those branches held
    tokens(branch) / text(branch)           the branch's token ids / its text after the prompt
    await score(branches, verifier, ref)    verifier scores of the branches' texts (counted)
    progress()              -> SearchProgress  the search so far, cheap enough to poll

A Branch is an immutable handle; the KV blocks behind it live in the backend. A branch may be
extended many times (each call samples afresh); passing the same branch k times to one extend
samples k independent continuations. Every context keeps exact accounting (SearchStats).
Strategies import this module and nothing else from the engine; it imports no torch.

Stop semantics of `extend` (every backend, the fake included):
    stop=None       the context's default stop strings (the SamplingParams the search was
                    opened with; none by default, so: until EOS, max_tokens or the context end)
    stop=[]         no stop strings: until EOS, max_tokens or the context end
    stop=[s, ...]   also until the generated text contains one of them; the stop string is
                    part of the new branch's text
The new branch's `finish_reason` says which ended it, in the one vocabulary FINISH_REASONS.

Lifetime: `close()` (or leaving `async with`, which awaits `aclose()` without blocking the event
loop) releases every branch still live. Cancelling an awaited `extend` releases exactly what that
call was producing; the context stays usable. A context dropped without closing is released by
the garbage collector.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

FINISH_REASONS = {
    "eos": "the model emitted an end-of-sequence token",
    "stop": "a stop string or stop token id ended the step",
    "length": "max_tokens new tokens were generated",
    "max_model_len": "the context is full (the model's maximum length)",
    "abort": "cancelled before it finished (never on a Branch)",
    "error": "failed (never on a Branch; the call raised)",
}


def openai_finish_reason(reason: str) -> str:
    """The public edge (OpenAI / vLLM outputs): "stop", "length" or "abort"."""
    if reason not in FINISH_REASONS:
        raise ValueError(f"unknown finish reason {reason!r}; one of {list(FINISH_REASONS)}")
    return {"eos": "stop", "stop": "stop", "length": "length", "max_model_len": "length"}.get(
        reason, "abort"
    )


@dataclass(frozen=True, slots=True)
class Branch:
    id: int
    parent: int | None
    length: int  # tokens, prompt included
    prompt_length: int
    cumulative_logprob: float = 0.0  # sum of generated tokens' logprobs since the root
    finish_reason: str | None = None  # None (root/fork) or a key of FINISH_REASONS

    def child(self, new_id: int) -> Branch:
        """A fork's handle: the same state under a new id, with this branch as parent."""
        return Branch(
            new_id,
            self.id,
            self.length,
            self.prompt_length,
            self.cumulative_logprob,
            self.finish_reason,
        )

    @property
    def num_generated(self) -> int:
        return self.length - self.prompt_length

    @property
    def done(self) -> bool:
        """True when the branch cannot or should not be extended further (EOS or context end)."""
        return self.finish_reason in ("eos", "max_model_len")


@dataclass(slots=True)
class SearchStats:
    """Exact accounting for one search (one context)."""

    prompt_tokens: int = 0  # prompt lengths of the roots
    cached_prompt_tokens: int = 0  # prompt tokens served from the prefix cache
    computed_prompt_tokens: int = 0  # prompt tokens whose KV was computed
    recomputed_tokens: int = 0  # context tokens computed again (preemption), never wanted
    generated_tokens: int = 0
    samples: int = 0  # branches produced by extend (what Budget.max_samples counts)
    extend_calls: int = 0
    verifier_calls: int = 0  # candidates scored
    queue_seconds: float = 0.0  # per extend call: submission -> its first sequence scheduled
    latency_steps: int = 0  # per extend call: engine steps from submission to its last result
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None

    @property
    def wall_seconds(self) -> float:
        end = self.finished if self.finished is not None else time.perf_counter()
        return end - self.started

    def as_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "computed_prompt_tokens": self.computed_prompt_tokens,
            "recomputed_tokens": self.recomputed_tokens,
            "generated_tokens": self.generated_tokens,
            "samples": self.samples,
            "extend_calls": self.extend_calls,
            "verifier_calls": self.verifier_calls,
            "queue_seconds": round(self.queue_seconds, 4),
            "latency_steps": self.latency_steps,
            "wall_seconds": round(self.wall_seconds, 4),
        }


@dataclass(frozen=True, slots=True)
class SearchProgress:
    """A running search at a glance: what `SearchContext.progress()` returns (a server polls it
    for progress events)."""

    extend_calls: int  # the search's step count so far
    live_branches: int | None  # branches held, not yet released (draws still running are not
    # branches yet); None: the backend cannot say
    best_score: float | None  # the highest last-step score any `score` call returned so far
    generated_tokens: int  # stats.generated_tokens plus, where the backend streams, the tokens
    # of extends still running (ponder's engine); other backends count at extend granularity
    verifier_calls: int

    def as_dict(self) -> dict:
        return {
            "extend_calls": self.extend_calls,
            "live_branches": self.live_branches,
            "best_score": self.best_score,
            "generated_tokens": self.generated_tokens,
            "verifier_calls": self.verifier_calls,
        }


class SearchContext(abc.ABC):
    """What a backend implements for strategies. See the module docstring for the contract."""

    stats: SearchStats
    _best_score: float | None = None  # the default until `score` sees one (then per instance)

    @abc.abstractmethod
    def root(self, prompt: str | Sequence[int]) -> Branch: ...

    @abc.abstractmethod
    def fork(self, branch: Branch, n: int) -> list[Branch]: ...

    @abc.abstractmethod
    async def extend(
        self,
        branches: Sequence[Branch],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
        release_inputs: bool = False,
    ) -> list[Branch]: ...

    @abc.abstractmethod
    def release(self, branches: Iterable[Branch]) -> None: ...

    @abc.abstractmethod
    def tokens(self, branch: Branch) -> tuple[int, ...]: ...

    @abc.abstractmethod
    def text(self, branch: Branch) -> str: ...

    @abc.abstractmethod
    def prompt_text(self, branch: Branch) -> str:
        """The text of the branch's prompt (what a verifier sees as the question)."""

    async def score(
        self, branches: Sequence[Branch], verifier, reference: str | None = None
    ) -> list[list[float]]:
        """Score branches with a verifier (text in, step scores out), counted in the stats:
        one list of step scores per branch, in order.

        The verifier is always called one way, `verifier.score(prompts, texts, references)`
        (ponder.verifiers.base.Verifier); `references` is the problem's reference answer or
        tests repeated per candidate, or None. Runs in a worker thread so other searches keep
        the engine busy meanwhile."""
        if not branches:
            return []
        prompts = [self.prompt_text(b) for b in branches]
        texts = [self.text(b) for b in branches]
        self.stats.verifier_calls += len(branches)
        references = None if reference is None else [reference] * len(branches)
        scores = await asyncio.to_thread(verifier.score, prompts, texts, references)
        if len(scores) != len(branches):
            raise RuntimeError(
                f"verifier {getattr(verifier, 'name', verifier)!r} returned {len(scores)} "
                f"score lists for {len(branches)} candidates"
            )
        last = [steps[-1] for steps in scores if len(steps)]
        if last and (self._best_score is None or max(last) > self._best_score):
            self._best_score = float(max(last))
        return scores

    def live_branches(self) -> int | None:
        """How many branches are not yet released; None where a backend cannot say cheaply."""
        return None

    def tokens_in_flight(self) -> int:
        """Tokens sampled by extends still running (not yet in `stats.generated_tokens`); 0 for
        a backend that only learns its tokens when an extend returns."""
        return 0

    def progress(self) -> SearchProgress:
        """The search so far; cheap (no engine round trip), so a server may poll it."""
        s = self.stats
        return SearchProgress(
            extend_calls=s.extend_calls,
            live_branches=self.live_branches(),
            best_score=self._best_score,
            generated_tokens=s.generated_tokens + self.tokens_in_flight(),
            verifier_calls=s.verifier_calls,
        )

    @abc.abstractmethod
    def close(self) -> None:
        """Release every branch still live; the context is unusable afterwards."""

    async def aclose(self) -> None:
        """close() for async code: never blocks the event loop."""
        self.close()

    async def __aenter__(self) -> SearchContext:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def __enter__(self) -> SearchContext:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
