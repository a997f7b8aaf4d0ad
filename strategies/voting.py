"""Majority and weighted-majority votes over extracted answers, with one deterministic tie rule.

Unextractable answers (None) do not vote; with no votes the result is None. Ties go to the answer
whose FIRST occurrence comes earliest in the list (as HF search-and-learn's find_majority_answer),
so a vote never depends on set or dict ordering. The majority-voting strategies and align's
maj@k estimators both use these functions.
"""

from __future__ import annotations

from collections.abc import Sequence


def answer_weights(
    answers: Sequence[str | None], weights: Sequence[float] | None = None
) -> dict[str, float]:
    """Total weight per answer, in order of first occurrence (dicts keep insertion order)."""
    if weights is not None and len(weights) != len(answers):
        raise ValueError(f"{len(answers)} answers but {len(weights)} weights")
    totals: dict[str, float] = {}
    for i, a in enumerate(answers):
        if a is not None:
            totals[a] = totals.get(a, 0.0) + (1.0 if weights is None else float(weights[i]))
    return totals


def _winner(totals: dict[str, float]) -> str | None:
    best, best_total = None, float("-inf")
    for answer, total in totals.items():  # first occurrence order: strict > keeps the earliest
        if total > best_total:
            best, best_total = answer, total
    return best


def majority_vote(answers: Sequence[str | None]) -> str | None:
    return _winner(answer_weights(answers))


def weighted_majority_vote(answers: Sequence[str | None], weights: Sequence[float]) -> str | None:
    return _winner(answer_weights(answers, weights))
