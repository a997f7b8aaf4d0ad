"""What every strategy takes and returns, and the small helpers they share.

    async def run(ctx: SearchContext, request: SearchRequest, **options) -> SearchResult

A strategy sees Branches and the SearchContext verbs, never blocks or tensors, and imports no
torch. `SearchRequest` carries what all strategies need and is the one owner of the width, the
sampling settings, the seed and the stopping rules; strategy-specific knobs are keyword options
of the strategy itself, validated there. Whether a strategy needs a verifier (and a process
one) is stated once, in its registry entry (strategies/registry.py), and checked there.
`SearchResult` carries the chosen answer(s), every finished candidate with its scores, the
search trace and the context's exact accounting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ponder.engine.protocol import Branch, SearchContext, SearchStats
from ponder.engine.sampling_params import SamplingParams
from ponder.engine.structured.params import StructuredOutputsParams
from ponder.verifiers.aggregate import AGGREGATIONS, aggregate


@dataclass(frozen=True, slots=True)
class Budget:
    """Stop expanding once any set limit is reached (checked between rounds).

    Every limit is read from the context's own accounting (SearchStats), so each strategy
    counts them the same way: generated tokens, candidates scored, and samples = branches
    produced by extend (a whole solution for the sampling strategies, one step for the
    step-level ones)."""

    max_tokens: int | None = None  # generated tokens
    max_verifier_calls: int | None = None  # candidates scored
    max_samples: int | None = None  # branches produced by extend

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_verifier_calls", "max_samples"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"Budget.{name} must be an integer >= 1 or None, got {value!r}")

    def exhausted(self, stats: SearchStats) -> bool:
        return (
            (self.max_tokens is not None and stats.generated_tokens >= self.max_tokens)
            or (
                self.max_verifier_calls is not None
                and stats.verifier_calls >= self.max_verifier_calls
            )
            or (self.max_samples is not None and stats.samples >= self.max_samples)
        )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _first_line(text: str) -> str | None:
    return text.strip() or None


@dataclass(frozen=True)
class SearchRequest:
    """One search: the only owner of its width, sampling, seed and stopping settings.

    `n` is the width (samples, particles, beams); `seed` seeds both the backend's sampling and
    the strategy's own random choices (resampling), so one (request, strategy, options) gives one
    result. A step ends at `step_delimiter` or after `max_step_tokens`; a solution has at most
    `max_steps` steps, and a whole-solution sample at most `max_tokens` (default
    max_steps * max_step_tokens) tokens. `question` is what verifiers see as the prompt (e.g. the
    user message before a chat template wrapped it); by default the decoded prompt.
    `structured_outputs` constrains every sample (e.g. `task.answer_constraint()`); a
    step-level strategy's steps continue the grammar state of the branch they extend."""

    prompt: str | tuple[int, ...]
    verifier: object | None = None  # a ponder.verifiers Verifier; None: unscored strategies only
    n: int = 8
    seed: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    step_delimiter: str = "\n"
    max_steps: int = 40
    max_step_tokens: int = 256
    max_tokens: int | None = None
    budget: Budget = field(default_factory=Budget)
    aggregation: str = "last"  # how step scores become one score (verifiers/aggregate.py)
    extract_answer: Callable[[str], str | None] = _first_line
    reference: str | None = None  # reference answer / tests, for verifiers that need one
    question: str | None = None
    structured_outputs: StructuredOutputsParams | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            object.__setattr__(self, "prompt", tuple(self.prompt))
        for name in ("n", "seed", "max_steps", "max_step_tokens", "top_k"):
            if not _is_int(getattr(self, name)):
                raise ValueError(
                    f"SearchRequest.{name} must be an integer, got {getattr(self, name)!r}"
                )
        checks = [
            (1 <= self.n <= MAX_WIDTH, f"n must be in [1, {MAX_WIDTH}], got {self.n}"),
            (self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}"),
            (
                self.max_step_tokens >= 1,
                f"max_step_tokens must be >= 1, got {self.max_step_tokens}",
            ),
            (
                self.max_tokens is None or (_is_int(self.max_tokens) and self.max_tokens >= 1),
                f"max_tokens must be an integer >= 1 or None, got {self.max_tokens!r}",
            ),
            (
                isinstance(self.step_delimiter, str) and bool(self.step_delimiter),
                f"step_delimiter must be a non-empty string, got {self.step_delimiter!r}",
            ),
            (bool(self.prompt), "the prompt is empty"),
            (
                self.aggregation in AGGREGATIONS,
                f"unknown aggregation {self.aggregation!r}; known: {sorted(AGGREGATIONS)}",
            ),
            (isinstance(self.budget, Budget), f"budget must be a Budget, got {self.budget!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"SearchRequest: {message}")
        _ = self.sampling_params  # validates temperature, top_p, top_k, structured_outputs

    @property
    def solution_tokens(self) -> int:
        """The token bound of one whole-solution sample."""
        return self.max_tokens or self.max_steps * self.max_step_tokens

    @property
    def sampling_params(self) -> SamplingParams:
        """What the backend samples with: this request's temperature, top_p, top_k and
        constraint; n, the seed and stopping stay with the request (a search opens one context
        per request)."""
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            max_tokens=self.solution_tokens,
            structured_outputs=self.structured_outputs,
        )


MAX_WIDTH = 4096  # samples, particles or beams in one search


def problem_seed(seed: int, index: int) -> int:
    """The seed of problem `index` in a run seeded with `seed`: the one derivation that
    `ponder eval`, `ponder signals` and the benchmarks share, so a benchmark cell reproduces
    with `ponder eval` (a problem's result never depends on which others ran beside it)."""
    return seed * 1_000_003 + index


@dataclass(frozen=True, slots=True)
class Candidate:
    text: str
    answer: str | None
    score: float | None  # aggregated verifier score (None when unscored)
    step_scores: tuple[float, ...] = ()
    finished: bool = True  # ended with EOS (False: cut by a step or token limit)


@dataclass
class SearchResult:
    strategy: str
    answer: str | None
    answers: list[str | None]  # k answers for pass@k strategies, else [answer]
    candidates: list[Candidate]
    trace: list[dict] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def best(self) -> Candidate | None:
        scored = [c for c in self.candidates if c.answer == self.answer]
        return max(scored, key=lambda c: c.score or 0.0) if scored else None


def check_beam_width(strategy: str, n: int, beam_width: int) -> None:
    """Beam search and DVTS split the width n into groups of beam_width."""
    if beam_width < 1 or n % beam_width:
        raise ValueError(
            f"{strategy}: n ({n}) must be a positive multiple of beam_width ({beam_width})"
        )


async def score_branches(
    ctx: SearchContext, request: SearchRequest, branches: Sequence[Branch]
) -> list[tuple[float, tuple[float, ...]]]:
    """(aggregated score, step scores) per branch; an unscored (empty) text scores 0."""
    raw = await ctx.score(branches, request.verifier, request.reference)
    return [(aggregate(s, request.aggregation) if s else 0.0, tuple(s)) for s in raw]


def candidates_of(
    ctx: SearchContext,
    request: SearchRequest,
    branches: Sequence[Branch],
    scored: Sequence[tuple[float, tuple[float, ...]]] | None = None,
) -> list[Candidate]:
    out = []
    for i, b in enumerate(branches):
        text = ctx.text(b)
        score, steps = scored[i] if scored is not None else (None, ())
        out.append(
            Candidate(text, request.extract_answer(text), score, steps, b.finish_reason == "eos")
        )
    return out


def finish(ctx: SearchContext, strategy: str, answer, answers, candidates, trace) -> SearchResult:
    return SearchResult(strategy, answer, answers, candidates, trace, ctx.stats.as_dict())


def finish_best(
    ctx: SearchContext,
    request: SearchRequest,
    strategy: str,
    branches: Sequence[Branch],
    scores: Sequence[float],
    trace: list[dict],
) -> SearchResult:
    """The step-level strategies' ending: the final branches become candidates (with their
    aggregated scores), are released, and the highest-scoring one is the answer (the earliest
    on ties)."""
    cands = candidates_of(ctx, request, branches, [(s, ()) for s in scores])
    ctx.release(branches)
    best = max(cands, key=lambda c: c.score, default=None)
    answer = best.answer if best else None
    return finish(ctx, strategy, answer, [answer], cands, trace)
