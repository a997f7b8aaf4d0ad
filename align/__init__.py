"""ponder.align: inference-aware training signals from search results.

Estimators (numpy; one concept per module, each citing its source in ALGORITHMS.md):
    metrics   pass@k (Chen et al.), max@k and maj@k over n samples per prompt
    mean      mean objective with a "loo" / "group" / "group_std" (GRPO) baseline
    passk     PKPO pass@k / max@k weights for n >= k (Tang et al. at n == k)
    majority  maj@k leave-one-out advantages (Tang et al.)
    bon       Best-of-N-aware weights: BoN-SFT target, BoN-RLB(+P), BoN-RL-V (Chow et al.)
    ctrl      calibrate-and-transform rewards (InfAlign)
    loss      token-level REINFORCE / PPO loss with a k3 KL penalty (torch)

The objectives that map one group of n samples to n per-sample advantages share a registry:

    OBJECTIVES[name](rewards, *, k, answers, scores) -> advantages (n,)

rewards are per-sample (0/1 correctness for "majk" and "bon_rl"), answers the extracted answers
("majk"), scores verifier scores ("bon_rl" picks by them when given; "bon_rl_v" needs them).
`group_advantages(name, ...)` validates and dispatches. CTRL is not in it: it needs reference
samples, and it produces rewards to feed one of these objectives, not advantages.

align reads SearchResults and reward vectors; it never imports the scheduler or the KV cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike
from ponder.align.bon import bon_rl_v_weights, bon_rl_weights
from ponder.align.majority import majority_loo_advantages
from ponder.align.mean import mean_advantages
from ponder.align.passk import pkpo_loo_minus_one


class Objective(Protocol):
    def __call__(
        self,
        rewards: np.ndarray,
        *,
        k: int,
        answers: Sequence[str | None] | None,
        scores: np.ndarray | None,
    ) -> np.ndarray: ...


def _needs_group_of_k(name: str, n: int, k: int) -> None:
    if k != n:
        raise ValueError(f"{name} is defined on groups of exactly k samples; got n={n}, k={k}")


def _mean(rewards, *, k, answers, scores):
    return mean_advantages(rewards, "loo")  # the mean objective's gradient does not involve k


def _passk(rewards, *, k, answers, scores):
    return pkpo_loo_minus_one(rewards, k)


def _majk(rewards, *, k, answers, scores):
    if answers is None:
        raise ValueError("majk needs the extracted answers of the group")
    _needs_group_of_k("majk", len(rewards), k)
    return majority_loo_advantages(answers, rewards)


def _bon_rl(rewards, *, k, answers, scores):
    _needs_group_of_k("bon_rl", len(rewards), k)
    return bon_rl_weights(rewards, scores=scores)


def _bon_rl_v(rewards, *, k, answers, scores):
    if scores is None:
        raise ValueError("bon_rl_v needs verifier scores")
    _needs_group_of_k("bon_rl_v", len(rewards), k)
    return bon_rl_v_weights(scores)


OBJECTIVES: dict[str, Objective] = {
    "mean": _mean,
    "passk": _passk,
    "majk": _majk,
    "bon_rl": _bon_rl,
    "bon_rl_v": _bon_rl_v,
}


def group_advantages(
    objective: str,
    rewards: ArrayLike,
    *,
    k: int | None = None,
    answers: Sequence[str | None] | None = None,
    scores: ArrayLike | None = None,
) -> np.ndarray:
    """Per-sample advantages (n,) of one group under OBJECTIVES[objective]; k defaults to n."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; known: {sorted(OBJECTIVES)}")
    r = np.asarray(rewards, dtype=float)
    if r.ndim != 1 or len(r) == 0:
        raise ValueError(f"group_advantages takes one group of rewards, shape (n,); got {r.shape}")
    if answers is not None and len(answers) != len(r):
        raise ValueError(f"{len(r)} rewards but {len(answers)} answers")
    s = None if scores is None else np.asarray(scores, dtype=float)
    if s is not None and s.shape != r.shape:
        raise ValueError(f"{len(r)} rewards but scores shaped {s.shape}")
    return OBJECTIVES[objective](r, k=len(r) if k is None else k, answers=answers, scores=s)
