"""What every strategy takes and returns, and the small helpers they share.

    async def run(ctx: SearchContext, request: SearchRequest, **options) -> SearchResult

A strategy sees Branches and the SearchContext verbs, never blocks or tensors, and imports no
torch. `SearchRequest` carries what all strategies need (prompt, verifier, sample count, budget,
step delimiter, answer extraction); strategy-specific knobs are keyword options of the strategy
itself, validated there. `SearchResult` carries the chosen answer(s), every finished candidate
with its scores, the search trace and the context's exact accounting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ponder.engine.protocol import Branch, SearchContext, SearchStats
from ponder.verifiers.aggregate import aggregate


@dataclass(frozen=True, slots=True)
class Budget:
    """Stop expanding once any set limit is reached (checked between rounds)."""

    max_tokens: int | None = None  # generated tokens
    max_verifier_calls: int | None = None  # candidates scored
    max_samples: int | None = None  # extend results produced

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_verifier_calls", "max_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"Budget.{name} must be >= 1 or None, got {value}")

    def exhausted(self, stats: SearchStats, samples: int) -> bool:
        return (
            (self.max_tokens is not None and stats.generated_tokens >= self.max_tokens)
            or (
                self.max_verifier_calls is not None
                and stats.verifier_calls >= self.max_verifier_calls
            )
            or (self.max_samples is not None and samples >= self.max_samples)
        )


@dataclass(frozen=True)
class SearchRequest:
    prompt: str
    verifier: object | None = None  # a ponder.verifiers Verifier; None: unscored strategies only
    n: int = 8  # samples, particles or beams: the strategy's width
    budget: Budget = field(default_factory=Budget)
    step_delimiter: str = "\n"
    max_steps: int = 40
    max_step_tokens: int = 256
    aggregation: str = "last"  # how step scores become one score (verifiers/aggregate.py)
    extract_answer: Callable[[str], str | None] = lambda text: text.strip() or None
    reference: str | None = None  # reference answer / tests, for verifiers that need one

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"SearchRequest.n must be >= 1, got {self.n}")
        if self.max_steps < 1 or self.max_step_tokens < 1:
            raise ValueError("SearchRequest.max_steps and max_step_tokens must be >= 1")
        if not self.step_delimiter:
            raise ValueError("SearchRequest.step_delimiter must be a non-empty string")


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


def require_verifier(request: SearchRequest, strategy: str, process: bool = False):
    v = request.verifier
    if v is None:
        raise ValueError(f"strategy {strategy!r} needs a verifier")
    if process and not getattr(v, "process", False):
        raise ValueError(f"strategy {strategy!r} needs a process verifier, got {v.name!r}")
    return v


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
