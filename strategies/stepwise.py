"""One reasoning step for many branches, scored: the shared move of the step-level strategies."""

from __future__ import annotations

from collections.abc import Sequence

from ponder.engine.protocol import Branch, SearchContext
from ponder.strategies.base import SearchRequest, score_branches


async def expand(
    ctx: SearchContext, request: SearchRequest, branches: Sequence[Branch]
) -> tuple[list[Branch], list[float]]:
    """Extend each branch by one step (to the step delimiter, EOS or the step token limit) and
    score the results with the request's verifier; returns (new branches, aggregated scores)."""
    if not branches:
        return [], []
    new = await ctx.extend(
        branches, stop=[request.step_delimiter], max_tokens=request.max_step_tokens
    )
    scored = await score_branches(ctx, request, new)
    return new, [s for s, _ in scored]


def is_finished(branch: Branch, num_steps: int, request: SearchRequest) -> bool:
    """Done: EOS, the context end, or the step limit."""
    return branch.done or num_steps >= request.max_steps
