"""Aggregation of per-step scores into one number: pure functions and a registry.

`last` (the PRM's score of the whole prefix, the best choice per Snell et al.), `min`, `prod`,
`mean`, and `model` (the verifier scored the whole solution as one step, so exactly one score).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence


def _model(scores: Sequence[float]) -> float:
    if len(scores) != 1:
        raise ValueError(
            f"aggregation 'model' expects exactly one score (the whole solution scored as one "
            f"step), got {len(scores)}"
        )
    return float(scores[0])


AGGREGATIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "last": lambda s: float(s[-1]),
    "min": lambda s: float(min(s)),
    "prod": lambda s: float(math.prod(s)),
    "mean": lambda s: float(sum(s) / len(s)),
    "model": _model,
}


def aggregate(scores: Sequence[float], how: str = "last") -> float:
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; known: {sorted(AGGREGATIONS)}")
    if len(scores) == 0:
        raise ValueError("cannot aggregate an empty list of step scores")
    return AGGREGATIONS[how](scores)
