"""`sample` (one sample, the pass@1 baseline) and `bon` (Best-of-N with a verifier).

BoN draws N complete solutions and returns the one with the highest aggregated verifier score
(ties: the earliest sample).
"""

from __future__ import annotations

from dataclasses import replace

from ponder.engine.context import SearchContext
from ponder.strategies.base import SearchRequest, SearchResult, finish, require_verifier
from ponder.strategies.sampling import draw


async def sample(ctx: SearchContext, request: SearchRequest) -> SearchResult:
    candidates, trace = await draw(ctx, replace(request, n=1), score=False)
    answer = candidates[0].answer if candidates else None
    return finish(ctx, "sample", answer, [answer], candidates, trace)


async def bon(
    ctx: SearchContext, request: SearchRequest, *, wave: int | None = None
) -> SearchResult:
    require_verifier(request, "bon")
    candidates, trace = await draw(ctx, request, score=True, wave=wave)
    best = max(candidates, key=lambda c: c.score, default=None)  # max keeps the first of ties
    answer = best.answer if best else None
    return finish(ctx, "bon", answer, [answer], candidates, trace)
