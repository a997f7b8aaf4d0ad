"""`sample` (one sample, the pass@1 baseline) and `bon` (Best-of-N with a verifier).

BoN draws N complete solutions and returns the one with the highest aggregated verifier score
(ties: the earliest sample). Adaptive budget: with `stop_score=s`, samples are drawn in waves
and drawing stops once some sample scores at least s. When s is the verifier's maximum (1.0 for
scores in [0, 1]) this never changes the answer for the samples drawn: a later sample could at
best tie, and ties go to the earliest. A lower s trades accuracy for tokens.
"""

from __future__ import annotations

from dataclasses import replace

from ponder.engine.protocol import SearchContext
from ponder.strategies.base import (
    Candidate,
    SearchRequest,
    SearchResult,
    finish,
)
from ponder.strategies.sampling import draw


async def sample(ctx: SearchContext, request: SearchRequest) -> SearchResult:
    candidates, trace = await draw(ctx, replace(request, n=1), score=False)
    answer = candidates[0].answer if candidates else None
    return finish(ctx, "sample", answer, [answer], candidates, trace)


async def bon(
    ctx: SearchContext,
    request: SearchRequest,
    *,
    wave: int | None = None,
    stop_score: float | None = None,
) -> SearchResult:

    def stop(cands: list[Candidate]) -> bool:
        return any(c.score is not None and c.score >= stop_score for c in cands)

    candidates, trace = await draw(
        ctx, request, score=True, wave=wave, stop_early=stop if stop_score is not None else None
    )
    best = max(candidates, key=lambda c: c.score, default=None)  # max keeps the first of ties
    answer = best.answer if best else None
    return finish(ctx, "bon", answer, [answer], candidates, trace)
