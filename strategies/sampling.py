"""Drawing complete samples for the sampling-based strategies (BoN, voting, BoM).

`draw` samples up to `request.n` full solutions from the root, in waves, stopping when the
budget runs out or when a `stop_early(candidates_so_far)` callback says more samples cannot
change the outcome (adaptive budgets). Every wave shares the prompt's KV: the root is prefilled
once and each wave forks from it.
"""

from __future__ import annotations

from collections.abc import Callable

from ponder.engine.protocol import Branch, SearchContext
from ponder.strategies.base import Candidate, SearchRequest, candidates_of, score_branches

EARLY_STOP_WAVE = 4  # samples per wave when a strategy may stop early


async def draw(
    ctx: SearchContext,
    request: SearchRequest,
    *,
    score: bool,
    wave: int | None = None,
    stop_early: Callable[[list[Candidate]], bool] | None = None,
) -> tuple[list[Candidate], list[dict]]:
    """Candidates (scored if asked) and a trace with one entry per wave. Without `wave`, the
    samples come in one wave, or in waves of EARLY_STOP_WAVE when `stop_early` is given."""
    if wave is not None and wave < 1:
        raise ValueError(f"wave must be >= 1, got {wave}")
    wave = wave or (EARLY_STOP_WAVE if stop_early is not None else request.n)
    root = ctx.root(request.prompt)
    candidates: list[Candidate] = []
    trace: list[dict] = []
    while len(candidates) < request.n:
        if request.budget.exhausted(ctx.stats):
            break
        size = min(wave, request.n - len(candidates))
        branches: list[Branch] = await ctx.extend(
            [root] * size, stop=[], max_tokens=request.solution_tokens
        )
        scored = await score_branches(ctx, request, branches) if score else None
        new = candidates_of(ctx, request, branches, scored)
        ctx.release(branches)
        candidates += new
        trace.append(
            {
                "wave": len(trace),
                "samples": size,
                "answers": [c.answer for c in new],
                "scores": [c.score for c in new],
            }
        )
        if stop_early is not None and stop_early(candidates):
            trace[-1]["stopped_early"] = True
            break
    ctx.release([root])
    return candidates, trace
