"""The mean objective (standard RL, pass@1) with a group baseline: per-sample advantages.

ALGORITHMS.md §1.1 (f = mean of the rewards) and §1.2 [P, verl]: for n samples of one prompt
with rewards r_1..r_n,

    "loo"        A_i = r_i - (1/(n-1)) sum_{j != i} r_j        (RLOO; PKPO Eq. 26)
    "group"      A_i = r_i - mean(r)                            (= (n-1)/n times "loo")
    "group_std"  A_i = (r_i - mean(r)) / (std(r) + eps)         (GRPO, as verl's default)

"loo" is unbiased: the baseline does not depend on sample i. "group" includes r_i in its own
baseline, which only shrinks the gradient by (n-1)/n. "group_std" is biased (the std depends
on every sample) and rescales prompts with low reward spread; std uses Bessel's correction
(ddof=1) and eps = 1e-6, as verl's `compute_grpo_outcome_advantage` (torch.std is unbiased).
A group whose rewards are all equal gets zero advantages under every baseline.

Shapes: rewards (n,) for one prompt or (P, n) for P prompts (any leading axes); the result
has the same shape, float64. Every baseline needs n >= 2.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

Baseline = Literal["loo", "group", "group_std"]
BASELINES: tuple[Baseline, ...] = ("loo", "group", "group_std")


def mean_advantages(
    rewards: ArrayLike, baseline: Baseline = "loo", *, eps: float = 1e-6
) -> np.ndarray:
    """Per-sample advantages for the mean objective; see the module docstring."""
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; known: {list(BASELINES)}")
    r = np.asarray(rewards, dtype=float)
    if r.ndim == 0 or r.shape[-1] < 2:
        raise ValueError(f"a group baseline needs n >= 2 samples per prompt, got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("mean_advantages got non-finite rewards")
    n = r.shape[-1]
    centred = r - r.mean(axis=-1, keepdims=True)
    if baseline == "loo":
        return centred * (n / (n - 1))  # r_i - (sum - r_i)/(n-1) == n/(n-1) (r_i - mean)
    if baseline == "group":
        return centred
    if eps <= 0:
        raise ValueError(f"group_std needs eps > 0 (it guards constant groups), got {eps}")
    return centred / (r.std(axis=-1, ddof=1, keepdims=True) + eps)
