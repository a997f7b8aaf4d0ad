"""Best-of-Majority (Di et al., ICLR 2026) for pass@k: frequency filter, then top-k by reward.

Distinct answers whose empirical frequency among the N samples is at least `alpha` survive; they
are ranked by the MEAN verifier score of their samples (the ALGORITHMS.md choice for the
unspecified per-answer aggregation) and the top k are returned. If fewer than k survive, the
list is topped up with the best-scoring filtered-out answers (documented fallback). alpha = 0
is Best-of-N over distinct answers; k = 1 with a constant verifier is majority voting.
Ties keep the order of first occurrence.
"""

from __future__ import annotations

from ponder.engine.context import SearchContext
from ponder.strategies.base import SearchRequest, SearchResult, finish, require_verifier
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


async def bom(
    ctx: SearchContext, request: SearchRequest, *, alpha: float = 0.1, k: int = 1
) -> SearchResult:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    require_verifier(request, "bom")
    candidates, trace = await draw(ctx, request, score=True)
    answers = best_of_majority(
        [c.answer for c in candidates], [c.score for c in candidates], alpha, k
    )
    return finish(ctx, "bom", answers[0] if answers else None, answers, candidates, trace)
