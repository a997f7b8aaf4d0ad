"""Best-of-N-aware fine-tuning signals: Chow et al. (ICLR 2025), arXiv 2412.15287.

ALGORITHMS.md §2 ([S] for the paper's algorithms, [D] for the identities checked by
shared/ref/checks/check_bon.py). With N samples per prompt and p = P_fail(x), the chance that
one sample is wrong, Best-of-N with a verifier equal to the 0/1 reward R succeeds with
J_BoN = 1 - p^N, and the BoN pick y* is distributed as

    pi_bon(y) = pi(y) (1 - p^N)/(1 - p)  if R(y) = 1,      pi(y) p^(N-1)  if R(y) = 0.

BoN-RLB weights (binary reward), applied to the BoN-selected sample only:

    g+(p) = N p^(N-1) / (1 - p^N)               if y* is correct
    g-(p) = N p / (1 - p)                       if y* is wrong
    gbar+(p) = N p^(N-1) (1 - p) / (1 - p^N)    positives only, BoN-RLB(P)

SIGN CONVENTION (the one check_bon.py verifies exactly): the gradient estimate is
w grad log pi(y*) and the loss is -w log pi(y*), with w = g+ R + g- (1 - R). Both weights are
non-negative: a wrong pick gets +g-, not -g-. Then E_{y*~pi_bon}[w grad log pi(y*)] =
grad J_BoN = N p^(N-1) E_pi[R grad log pi] exactly, because E_bon[(1-R) grad log pi] =
-p^(N-1) E_pi[R grad log pi] already points against the update. Writing -g- instead is biased
by the factor (1+p)/(1-p). The paper's own sign is [U] (ALGORITHMS.md Appendix B); what we
ship is what the exact identity fixes. gbar+ alone is also exact: E_bon[gbar+ R grad log pi] =
grad J_BoN.

p is estimated as the fraction of the group that fails (or passed in, ideally from extra
samples). Both g+ and g- grow like 1/(1-p) as p -> 1 (gbar+ tends to 1) and are infinite at
p = 1, so:
- p is clipped to <= 1 - eps (default eps = 0.01);
- by default (max_weight=None) the weights are capped at N ONLY where p = 1, an all-fail group
  (with p from the same samples the pick there is wrong, so this bounds g-). For every p < 1 the
  default weights are the closed forms above at the clipped p, so with the true p <= 1 - eps
  the update is exact (N=2, p=0.7: g+ = 2.745, g- = 4.667, both above N). The cap at p = 1
  costs no bias for a true p: there R = 0 for every sample, grad J_BoN = 0, and any finite g-
  gives E_pi[g- grad log pi] = 0. Note that the default weights are not monotone at p = 1:
  g- is N(1-eps)/eps (99 N) just below 1 and N at 1;
- an explicit max_weight caps every weight (g+, g-, gbar+) at every p; it bounds the update
  and biases it wherever a closed form exceeds it.
p = 0 gives zero weights for N >= 2: easy prompts carry no signal. Clipping and capping, and p
estimated from the same samples, make the estimate biased; it is exact only for the true p.

BoN-SFT picks the best-scoring sample as the imitation target (`bon_select`). BoN-RL-V
(`bon_rl_v_weights`) is REINFORCE on the BoN pick with its verifier score as reward, the
"reward = verifier score" variant of §2.2; it is not an unbiased gradient of E[score of the
pick]. That objective is max@N of the scores, whose unbiased gradient is
passk.pkpo_loo_minus_one(scores, k=N) given n >= N samples.

Shapes: per-sample inputs are (n,) for one prompt or (P, n) for P prompts (any leading
axes); per-sample outputs have the same shape and are zero except at the pick. p is a
scalar or one value per prompt.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def bon_select(scores: ArrayLike) -> int | np.ndarray:
    """Index of the best score per prompt; ties go to the lowest index (the first sample).
    (n,) -> int, (P, n) -> (P,) int array."""
    s = np.asarray(scores, dtype=float)
    if s.ndim == 0 or s.shape[-1] == 0:
        raise ValueError(f"bon_select needs scores shaped (n,) or (P, n), got {s.shape}")
    if np.any(np.isnan(s)):
        raise ValueError("bon_select got NaN scores; score failed samples with -inf instead")
    idx = np.argmax(s, axis=-1)  # argmax returns the first of tied maxima
    return int(idx) if idx.ndim == 0 else idx


def _checked_p(p_fail: ArrayLike, eps: float) -> np.ndarray:
    p = np.asarray(p_fail, dtype=float)
    if np.any(~((p >= 0) & (p <= 1))):
        raise ValueError(f"p_fail must lie in [0, 1], got {p_fail}")
    if not 0 < eps < 1:
        raise ValueError(f"eps must lie in (0, 1), got {eps}")
    return p


def _cap(w: np.ndarray, p: np.ndarray, n: int, max_weight: float | None) -> np.ndarray:
    """max_weight=None: cap at N only where p = 1 (all-fail); else cap every weight."""
    if max_weight is None:
        return np.where(p == 1.0, np.minimum(w, float(n)), w)
    if not max_weight > 0:
        raise ValueError(f"max_weight must be positive, got {max_weight}")
    return np.minimum(w, max_weight)


def _scalar_or_array(x: np.ndarray) -> float | np.ndarray:
    return float(x) if x.ndim == 0 else x


def _check_n(n: int) -> None:
    if n < 1:
        raise ValueError(f"the Best-of-N size must be >= 1, got N={n}")


def _success(p: np.ndarray, n: int) -> np.ndarray:
    """1 - p^N, accurate near p = 1 (expm1) and exactly 1 at p = 0."""
    with np.errstate(divide="ignore"):
        return -np.expm1(n * np.log(p))


def bon_rlb_weights(
    p_fail: ArrayLike, n: int, *, eps: float = 0.01, max_weight: float | None = None
) -> tuple[float | np.ndarray, float | np.ndarray]:
    """(g+, g-) for BoN size N = n at failure rate(s) p_fail, clipped; floats for a scalar p."""
    _check_n(n)
    raw = _checked_p(p_fail, eps)
    p = np.minimum(raw, 1.0 - eps)
    g_plus = _cap(n * p ** (n - 1) / _success(p, n), raw, n, max_weight)
    g_minus = _cap(n * p / (1.0 - p), raw, n, max_weight)
    return _scalar_or_array(g_plus), _scalar_or_array(g_minus)


def bon_rlb_positive_weight(
    p_fail: ArrayLike, n: int, *, eps: float = 0.01, max_weight: float | None = None
) -> float | np.ndarray:
    """gbar+ = N p^(N-1) (1-p) / (1-p^N), the BoN-RLB(P) weight for a correct pick."""
    _check_n(n)
    raw = _checked_p(p_fail, eps)
    p = np.minimum(raw, 1.0 - eps)
    w = n * p ** (n - 1) * (1.0 - p) / _success(p, n)
    return _scalar_or_array(_cap(w, raw, n, max_weight))


def _one_hot(idx: np.ndarray | int, shape: tuple[int, ...]) -> np.ndarray:
    """(..., n) with 1.0 at the picked index of each prompt."""
    hot = np.zeros(shape)
    np.put_along_axis(hot, np.asarray(idx)[..., None], 1.0, axis=-1)
    return hot


def bon_rl_weights(
    correct: ArrayLike,
    *,
    scores: ArrayLike | None = None,
    p_fail: ArrayLike | None = None,
    positives_only: bool = False,
    eps: float = 0.01,
    max_weight: float | None = None,
) -> np.ndarray:
    """BoN-RLB per-sample weights for groups of N = n samples with 0/1 rewards `correct`.

    The pick is argmax of `scores` (a verifier), or with scores=None the first correct sample
    (a verifier equal to the reward; the first sample if none is correct). p_fail defaults to
    the fraction of the group that is wrong. The pick gets g+ if correct, else +g- (or gbar+
    and 0 with positives_only); every other sample gets 0. Loss: -w log pi(y)."""
    r = np.asarray(correct, dtype=float)
    if r.ndim == 0 or r.shape[-1] == 0:
        raise ValueError(f"bon_rl_weights needs rewards shaped (n,) or (P, n), got {r.shape}")
    if not np.all((r == 0) | (r == 1)):
        raise ValueError("bon_rl_weights needs 0/1 rewards; use bon_rl_v_weights for scores")
    n = r.shape[-1]
    if scores is not None and np.shape(scores) != r.shape:
        raise ValueError(f"scores shaped {np.shape(scores)} but rewards shaped {r.shape}")
    pick = bon_select(r if scores is None else scores)
    hot = _one_hot(pick, r.shape)  # (..., n)
    picked_correct = (hot * r).sum(axis=-1, keepdims=True)  # (..., 1)
    p = 1.0 - r.mean(axis=-1, keepdims=True) if p_fail is None else np.asarray(p_fail)[..., None]
    if positives_only:
        w = picked_correct * bon_rlb_positive_weight(p, n, eps=eps, max_weight=max_weight)
    else:
        g_plus, g_minus = bon_rlb_weights(p, n, eps=eps, max_weight=max_weight)
        w = np.where(picked_correct == 1, g_plus, g_minus)
    return hot * w


def bon_rl_v_weights(scores: ArrayLike) -> np.ndarray:
    """BoN-RL-V: the BoN pick (best verifier score) gets its own score as its weight, every
    other sample 0; (n,) or (P, n). See the module docstring for what this does not estimate."""
    s = np.asarray(scores, dtype=float)
    pick = bon_select(s)
    if not np.all(np.isfinite(np.take_along_axis(s, np.asarray(pick)[..., None], axis=-1))):
        raise ValueError("bon_rl_v_weights: the best score is not finite")
    return _one_hot(pick, s.shape) * np.where(np.isfinite(s), s, 0.0)
