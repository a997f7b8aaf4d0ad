"""Majority and weighted-majority votes over extracted answers, with one deterministic tie rule.

Unextractable answers (None) do not vote; with no votes the result is None. Ties (equal count,
or equal weight sum) go to the answer whose FIRST occurrence comes earliest in the list, as in
HF search-and-learn's `find_majority_answer`, so a vote never depends on set or dict ordering.
The majority-voting strategies and align's maj@k estimators and metric all use these functions;
there is no second implementation of the rule.

Answers are compared as given: canonicalisation (normalising "0.50" and "1/2") is the
extractor's job, upstream of this module. Pure Python, no numpy or torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def answer_counts(answers: Sequence[str | None]) -> dict[str, int]:
    """Votes per answer, in order of first occurrence (dicts keep insertion order)."""
    counts: dict[str, int] = {}
    for a in answers:
        if a is not None:
            counts[a] = counts.get(a, 0) + 1
    return counts


def answer_weights(
    answers: Sequence[str | None], weights: Sequence[float] | None = None
) -> dict[str, float]:
    """Total weight per answer, in order of first occurrence; `weights=None` counts votes."""
    if weights is not None and len(weights) != len(answers):
        raise ValueError(f"{len(answers)} answers but {len(weights)} weights")
    totals: dict[str, float] = {}
    for i, a in enumerate(answers):
        if a is None:
            continue
        w = 1.0 if weights is None else float(weights[i])
        if not math.isfinite(w):
            raise ValueError(f"weight {i} (answer {a!r}) is {w}; votes need finite weights")
        totals[a] = totals.get(a, 0.0) + w
    return totals


def top_answer(totals: dict[str, float] | dict[str, int]) -> str | None:
    """The answer with the largest total; `totals` must be in first-occurrence order, and the
    strict `>` then keeps the earliest of tied answers. None when there are no votes."""
    best, best_total = None, -math.inf
    for answer, total in totals.items():
        if total > best_total:
            best, best_total = answer, total
    return best


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The most frequent non-None answer; ties go to the earliest first occurrence."""
    return top_answer(answer_counts(answers))


def weighted_majority_vote(answers: Sequence[str | None], weights: Sequence[float]) -> str | None:
    """The non-None answer with the largest weight sum; ties go to the earliest first occurrence.

    A None answer's weight is ignored. Weights may be any finite reals (a negative weight lowers
    its answer's total); NaN or infinity is a ValueError."""
    return top_answer(answer_weights(answers, weights))
