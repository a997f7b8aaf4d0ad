"""Best-of-Majority (Di et al., ICLR 2026) for pass@k: frequency filter, then top-k by reward.

Distinct answers whose empirical frequency among the N samples is at least `alpha` survive; they
are ranked by the MEAN verifier score of their samples (the ALGORITHMS.md choice for the
unspecified per-answer aggregation) and the top k are returned. If fewer than k survive, the
list is topped up with the best-scoring filtered-out answers (documented fallback). alpha = 0
is Best-of-N over distinct answers. Ties keep the order of first occurrence.

Frequency only filters (ALGORITHMS.md §6.1); it never ranks. So k = 1 with a constant verifier
is NOT majority voting: every survivor ties, and the earliest answer with frequency >= alpha
wins (["A", "B", "B"], alpha <= 1/3 -> "A", where majority voting says "B"). It agrees with
majority voting only when alpha > 1/2 and some answer reaches alpha (then it is the strict
majority); when no answer reaches alpha it is the first answer of all.

Adaptive budget: with `stop_score=s`, samples are drawn in waves and drawing stops once the
first k answers (in order of first occurrence) whose samples all score at least s each hold at
least alpha * N of the planned N samples. When s is the verifier's maximum and a sample's score
depends only on its answer (the rule checkers), this never changes the returned answers: those
k answers pass the filter at any later N, their mean stays at the maximum, and an answer that
appears later can at best tie them and ties keep the earlier one. A noisy verifier or a lower s
makes it a heuristic that trades accuracy for tokens.
"""

from __future__ import annotations

from ponder.engine.protocol import SearchContext
from ponder.strategies.base import (
    Candidate,
    SearchRequest,
    SearchResult,
    finish,
)
from ponder.strategies.sampling import draw


def best_of_majority(answers, scores, alpha: float, k: int) -> list[str]:
    groups: dict[str, list[float]] = {}
    for a, s in zip(answers, scores, strict=True):
        if a is not None:
            groups.setdefault(a, []).append(s)
    n = len(answers)
    mean = {a: sum(v) / len(v) for a, v in groups.items()}
    order = list(groups)  # first-occurrence order; sorted() is stable
    kept = [a for a in order if len(groups[a]) / n >= alpha]
    dropped = [a for a in order if a not in kept]
    ranked = sorted(kept, key=lambda a: -mean[a]) + sorted(dropped, key=lambda a: -mean[a])
    return ranked[:k]


def settled(candidates: list[Candidate], n: int, alpha: float, k: int, stop_score: float) -> bool:
    """Whether the adaptive rule in the module docstring says to stop drawing."""
    groups: dict[str, list[float | None]] = {}
    for c in candidates:
        if c.answer is not None:
            groups.setdefault(c.answer, []).append(c.score)
    top = [a for a, s in groups.items() if all(x is not None and x >= stop_score for x in s)][:k]
    return len(top) == k and all(len(groups[a]) / n >= alpha for a in top)


async def bom(
    ctx: SearchContext,
    request: SearchRequest,
    *,
    alpha: float = 0.1,
    k: int = 1,
    wave: int | None = None,
    stop_score: float | None = None,
) -> SearchResult:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")

    def stop(cands: list[Candidate]) -> bool:
        return settled(cands, request.n, alpha, k, stop_score)

    candidates, trace = await draw(
        ctx, request, score=True, wave=wave, stop_early=stop if stop_score is not None else None
    )
    answers = best_of_majority(
        [c.answer for c in candidates], [c.score for c in candidates], alpha, k
    )
    return finish(ctx, "bom", answers[0] if answers else None, answers, candidates, trace)
