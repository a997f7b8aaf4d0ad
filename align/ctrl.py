"""CTRL, calibrate-and-transform rewards: InfAlign (Balashankar, Sun, ..., Beirami; ICML 2025),
arXiv 2412.19792. ALGORITHMS.md §3 ([P-abs] for the method, [D]/[U] for the estimator details).

1. Calibrate. With m reference samples z_1..z_m ~ pi_ref(.|x) scored by the reward model,

       C(x, y) = (1/m) sum_j [ 1{r(z_j) < r(y)} + 1/2 1{r(z_j) == r(y)} ]

   the per-prompt empirical CDF of reference rewards with ties counted half (mid-rank), in
   [0, 1]. Under pi_ref with continuous rewards C is close to Uniform[0, 1]; calibrating the
   reference set against itself averages exactly 1/2 whatever the ties.
2. Transform. Best-of-N: Phi_t(c) = exp(t c). Worst-of-N (BoN-jailbreaking): Phi_t(c) =
   -exp(-t c). Both increase in c; BoN's is convex (it rewards the top quantiles), WoN's
   concave (it punishes the bottom ones).
3. Run KL-regularised RL (align.loss with kl_coef = beta) on Phi_t(C(x, y)).

t is a free parameter: the paper's values per N are [U]. shared/ref/checks/infalign_tool.py
(an idealised model, [D]) suggests roughly t ~ 5 for N = 2 and t ~ 10-15 for N = 4 at
KL ~ 0.5-1 as a sweep range; t -> 0 recovers the identity (calibration only), optimal for
N = 1. The number of reference samples m is also [U]; the caller chooses it.

Shapes: rewards (n,) with reference (m,) for one prompt, or (P, n) with (P, m) for P prompts.
"""

from __future__ import annotations

import math
import numbers
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

Mode = Literal["bon", "won"]


def calibrate(rewards: ArrayLike, reference: ArrayLike) -> np.ndarray:
    """C = fraction of reference rewards below each reward, ties counted half; in [0, 1]."""
    r = np.asarray(rewards, dtype=float)
    z = np.asarray(reference, dtype=float)
    if z.ndim == 0 or z.shape[-1] == 0:
        raise ValueError(f"calibrate needs m >= 1 reference rewards per prompt, got {z.shape}")
    if r.ndim == 0 or r.shape[:-1] != z.shape[:-1]:
        raise ValueError(
            f"rewards {r.shape} and reference {z.shape} must be (n,) and (m,), or (P, n) and (P, m)"
        )
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(z))):
        raise ValueError("calibrate got non-finite rewards; a NaN compares unequal to everything")
    below = (z[..., None, :] < r[..., :, None]).sum(axis=-1)  # (..., n), compares (..., n, m)
    ties = (z[..., None, :] == r[..., :, None]).sum(axis=-1)
    return (below + 0.5 * ties) / z.shape[-1]


def transform(calibrated: ArrayLike, t: float, mode: Mode = "bon") -> np.ndarray:
    """Phi_t(c): exp(t c) for Best-of-N, -exp(-t c) for Worst-of-N; t > 0 and finite."""
    if not (isinstance(t, numbers.Real) and math.isfinite(t) and t > 0):
        raise ValueError(f"t must be a finite number > 0, got {t!r} (t -> 0 is calibration alone)")
    c = np.asarray(calibrated, dtype=float)
    if np.any(~((c >= 0) & (c <= 1))):
        raise ValueError("transform expects calibrated rewards in [0, 1] (see calibrate)")
    if mode == "bon":
        return np.exp(t * c)
    if mode == "won":
        return -np.exp(-t * c)
    raise ValueError(f"unknown mode {mode!r}; known: 'bon' (best-of-N), 'won' (worst-of-N)")


def ctrl_rewards(
    rewards: ArrayLike, reference: ArrayLike, t: float, mode: Mode = "bon"
) -> np.ndarray:
    """Phi_t(C(x, y)) for each sample: the reward CTRL trains on."""
    return transform(calibrate(rewards, reference), t, mode)
