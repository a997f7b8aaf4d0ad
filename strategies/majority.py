"""`majority` (self-consistency) and `weighted_majority` (reward-weighted voting).

Both vote over extracted, normalised answers with the shared tie rule (strategies/voting.py).
With `adaptive=True` they sample in waves and stop as soon as the leader cannot be overtaken by
the samples left (adaptive consistency); for the weighted vote each remaining sample can add at
most `max_weight` (1.0 for scores in [0, 1]).
"""

from __future__ import annotations

from ponder.engine.context import SearchContext
from ponder.strategies.base import Candidate, SearchRequest, SearchResult, finish, require_verifier
from ponder.strategies.sampling import draw
from ponder.strategies.voting import answer_weights, majority_vote, weighted_majority_vote


def decided(totals: dict[str, float], remaining: int, max_weight: float) -> bool:
    """True when no answer, seen or new, can catch the leader with the samples left.

    `totals` is in first-occurrence order; ties go to the earlier answer (voting.py), so an
    answer that first appeared after the leader must pass it, one before it only reach it."""
    if not totals:
        return False
    answers = list(totals)
    leader = max(answers, key=lambda a: totals[a])  # max keeps the earliest of ties
    gain = remaining * max_weight
    for rank, a in enumerate(answers):
        if a == leader:
            continue
        before = rank < answers.index(leader)
        if totals[a] + gain > totals[leader] or (before and totals[a] + gain == totals[leader]):
            return False
    return gain <= totals[leader]  # a new answer appears after the leader: it must pass it


async def majority(
    ctx: SearchContext, request: SearchRequest, *, adaptive: bool = False, wave: int = 4
) -> SearchResult:
    def stop(cands: list[Candidate]) -> bool:
        return decided(answer_weights([c.answer for c in cands]), request.n - len(cands), 1.0)

    candidates, trace = await draw(
        ctx,
        request,
        score=False,
        wave=wave if adaptive else None,
        stop_early=stop if adaptive else None,
    )
    answer = majority_vote([c.answer for c in candidates])
    return finish(ctx, "majority", answer, [answer], candidates, trace)


async def weighted_majority(
    ctx: SearchContext,
    request: SearchRequest,
    *,
    adaptive: bool = False,
    wave: int = 4,
    max_weight: float = 1.0,
) -> SearchResult:
    require_verifier(request, "weighted_majority")

    def stop(cands: list[Candidate]) -> bool:
        totals = answer_weights([c.answer for c in cands], [c.score for c in cands])
        return decided(totals, request.n - len(cands), max_weight)

    candidates, trace = await draw(
        ctx,
        request,
        score=True,
        wave=wave if adaptive else None,
        stop_early=stop if adaptive else None,
    )
    answer = weighted_majority_vote([c.answer for c in candidates], [c.score for c in candidates])
    return finish(ctx, "weighted_majority", answer, [answer], candidates, trace)
