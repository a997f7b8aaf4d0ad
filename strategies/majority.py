"""`majority` (self-consistency) and `weighted_majority` (reward-weighted voting).

Both vote over extracted, normalised answers with the shared tie rule (strategies/voting.py).
With `adaptive=True` they sample in waves and stop as soon as the leader cannot be overtaken by
the samples left (adaptive consistency); for the weighted vote each remaining sample can add at
most `max_weight` (1.0 for scores in [0, 1]). `majority` can also stop on confidence
(Aggarwal et al. 2023, "Adaptive-Consistency", Beta stopping rule): with `confidence=c` it stops
once P(p_leader > p_runner_up) >= c under a uniform-prior Beta posterior on the two top counts,
which saves more samples than the exact rule at a small, tunable risk of a different answer.
"""

from __future__ import annotations

import math

from ponder.engine.protocol import SearchContext
from ponder.strategies.base import Candidate, SearchRequest, SearchResult, finish
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


def leader_confidence(counts: dict[str, int] | dict[str, float]) -> float:
    """P(p_1 > p_2) for the two largest vote counts a >= b, with p ~ Beta(a + 1, b + 1).

    For integer parameters the Beta tail is a binomial sum: P(X > 1/2) for X ~ Beta(a+1, b+1)
    equals P(Binomial(a + b + 1, 1/2) <= a). No votes, or one answer only, follow from a, b."""
    top = sorted((int(v) for v in counts.values()), reverse=True) + [0, 0]
    a, b = top[0], top[1]
    trials = a + b + 1
    return sum(math.comb(trials, i) for i in range(a + 1)) / 2**trials


async def majority(
    ctx: SearchContext,
    request: SearchRequest,
    *,
    adaptive: bool = False,
    wave: int = 4,
    confidence: float | None = None,
) -> SearchResult:
    if confidence is not None and not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")

    def stop(cands: list[Candidate]) -> bool:
        counts = answer_weights([c.answer for c in cands])
        if confidence is not None and leader_confidence(counts) >= confidence:
            return True
        return decided(counts, request.n - len(cands), 1.0)

    early = adaptive or confidence is not None
    candidates, trace = await draw(
        ctx,
        request,
        score=False,
        wave=wave if early else None,
        stop_early=stop if early else None,
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
