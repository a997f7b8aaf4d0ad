"""PKPO: unbiased pass@k / max@k policy-gradient weights from n >= k samples per prompt.

Walder & Karkhanis, "Pass@K Policy Optimization", arXiv 2505.15201 (ALGORITHMS.md §1.4 [P]);
at n == k it is Tang et al.'s leave-one-out estimator (arXiv 2503.19595, §1.2).

Each function maps the n rewards of one prompt to n per-sample weights w_i such that
sum_i w_i grad log pi(y_i) is an unbiased estimate of grad max@k = grad E[max of k samples]
(pass@k for 0/1 rewards). Feed w as the per-sequence advantage of align.loss.

Sorting ascending, g_(1) <= ... <= g_(n), and writing w_i = C(i-1,k-1)/C(n,k) (metrics.max_weights):
- Binary rewards, Eq. 8: r_i = k/n if sample i is correct, else (k/n) pass@(k-1) of the other
  n-1 samples, i.e. (k/n) rho(n-1, c, k-1).
- `pkpo_s`, Eq. 19-21: s_i = (1/C(n,k)) sum over k-subsets I containing i of max_I g, i.e.
      s_(i) = w_i g_(i) + sum_{j>i} v_j g_(j),   v_j = C(j-2,k-2)/C(n,k)  (k >= 2, j >= k)
  (i is the max of C(i-1,k-1) subsets; g_(j), j > i, is the max of C(j-2,k-2) subsets holding i).
  v comes from the recurrence v_n = k(k-1)/(n(n-1)), v_{j-1} = v_j (j-k)/(j-2); one suffix sum
  finishes it: O(n log n) for the sort, O(n) after.
- `pkpo_loo`, Eq. 29: s_i - (1/(n-1)) sum_{j != i} S(j, k, [n] minus i), where S(j, k, A) is
  s_j computed on the samples A alone. That sum is k rho_k(g_-i), so the baseline is
  k/(n-1) times the unbiased max@k of the other n-1 samples; it needs n > k.
- `pkpo_loo_minus_one`, Eq. 33/34 (the paper's recommended "PKPO"):
      s_i^(loo-1) = (1/C(n,k)) sum_{|I|=k, i in I} [max_I g - max_{I minus i} g]
                  = s_i - (k/n) rho_{k-1}(g_-i)
  since the (k-1)-sets I minus i range over all (k-1)-subsets of the others, each once, and
  C(n-1,k-1)/C(n,k) = k/n. At n == k it is max(g) - max(g_-i), Tang's estimator. k == 1 has no
  (k-1)-subsets: plain leave-one-out mean-centring, Eq. 26, g_i - mean(g_-i), as the paper
  uses for its k_opt = 1 runs. Note its scale: its expected update is n times grad pass@1,
  where every k >= 2 weight (and s at k = 1, g_i/n) estimates grad max@k itself.
rho_k'(g_-i) for every i is one prefix and one suffix sum over the sorted rewards, since
dropping position p moves the samples above it down one position.

Ties need no care: max depends only on values, so any order among equal rewards gives the
same weights. The weights are returned in the input order.

Shapes: rewards are (n,) for one prompt or (P, n) for P prompts (any leading axes); the
result has the same shape, float64.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from ponder.align.metrics import max_weights, pass_at_k


def _rewards(rewards: ArrayLike, k: int, what: str) -> np.ndarray:
    g = np.asarray(rewards, dtype=float)
    if g.ndim == 0 or g.shape[-1] == 0:
        raise ValueError(f"{what} needs rewards shaped (n,) or (P, n) with n >= 1, got {g.shape}")
    n = g.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(
            f"{what} needs 1 <= k <= n (no unbiased estimator for k > n), got k={k}, n={n}"
        )
    if not np.all(np.isfinite(g)):
        raise ValueError(f"{what} got non-finite rewards; score failed samples with a finite value")
    return g


def _sort(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(g, axis=-1, kind="stable")
    return np.take_along_axis(g, order, axis=-1), order


def _unsort(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    out = np.empty_like(values)
    np.put_along_axis(out, order, values, axis=-1)
    return out


def _suffix_sum(x: np.ndarray) -> np.ndarray:
    """out[..., i] = sum_{j > i} x[..., j] (exclusive, from the right)."""
    total = np.cumsum(x[..., ::-1], axis=-1)[..., ::-1]
    return np.concatenate([total[..., 1:], np.zeros_like(total[..., :1])], axis=-1)


def _s_sorted(gs: np.ndarray, k: int) -> np.ndarray:
    """Eq. 19-21 on rewards sorted ascending along the last axis; (..., n)."""
    n = gs.shape[-1]
    s = gs * max_weights(n, k)  # diagonal: g_(i) is the max of the subset
    if k >= 2:
        j = np.arange(3, n + 1)
        ratios = np.clip((j - k) / (j - 2), 0.0, None)  # v_{j-1} / v_j for j = 3..n
        v = k * (k - 1) / (n * (n - 1)) * np.concatenate([np.cumprod(ratios[::-1])[::-1], [1.0]])
        v = np.concatenate([[0.0], v])  # (n,), position 1 is never an off-diagonal max
        s = s + _suffix_sum(gs * v)
    return s


def _loo_max_at(gs: np.ndarray, k: int) -> np.ndarray:
    """rho_k(g_-p), the unbiased max@k of the samples other than sorted position p; (..., n).

    Without position p, positions q < p keep their weight w[q] and positions q > p take
    w[q-1] (they move down one place), with w = max_weights(n-1, k)."""
    n = gs.shape[-1]
    w = max_weights(n - 1, k)  # (n-1,)
    below = np.cumsum(gs[..., :-1] * w, axis=-1)  # sum_{q <= p} w[q] g[q], p = 0..n-2
    below = np.concatenate([np.zeros_like(gs[..., :1]), below], axis=-1)  # exclusive: q < p
    above = _suffix_sum(np.concatenate([np.zeros_like(gs[..., :1]), gs[..., 1:] * w], axis=-1))
    return below + above


def pkpo_binary(correct: ArrayLike, k: int) -> np.ndarray:
    """Eq. 8 weights for 0/1 rewards: k/n if correct, else (k/n) * pass@(k-1) of the others."""
    f = _rewards(correct, k, "pkpo_binary")
    if not np.all((f == 0) | (f == 1)):
        raise ValueError("pkpo_binary needs 0/1 rewards; use pkpo_s for real-valued ones")
    n = f.shape[-1]
    # The n-1 others of a wrong sample hold all c correct ones. Clipping c to n-1 only touches
    # all-correct groups, where no sample takes the "wrong" branch.
    c = np.minimum(f.sum(axis=-1, keepdims=True).astype(int), n - 1)  # (..., 1)
    # pass@0 is 0 (the empty set never passes): a wrong sample gets nothing when k == 1.
    others = pass_at_k(n - 1, c, k - 1) if k >= 2 else np.zeros(c.shape)
    return np.where(f == 1, k / n, (k / n) * others)


def pkpo_s(rewards: ArrayLike, k: int) -> np.ndarray:
    """Eq. 19-21: s_i, the average of max over the k-subsets holding i (times their share)."""
    g = _rewards(rewards, k, "pkpo_s")
    gs, order = _sort(g)
    return _unsort(_s_sorted(gs, k), order)


def pkpo_loo(rewards: ArrayLike, k: int) -> np.ndarray:
    """Eq. 29: s_i minus k/(n-1) times the unbiased max@k of the other samples; needs n > k."""
    g = _rewards(rewards, k, "pkpo_loo")
    n = g.shape[-1]
    if n <= k:
        raise ValueError(
            f"pkpo_loo needs n > k (the others must hold a k-subset), got n={n}, "
            f"k={k}; use pkpo_loo_minus_one"
        )
    gs, order = _sort(g)
    return _unsort(_s_sorted(gs, k) - k / (n - 1) * _loo_max_at(gs, k), order)


def pkpo_loo_minus_one(rewards: ArrayLike, k: int) -> np.ndarray:
    """Eq. 33/34, the recommended PKPO weights: s_i minus (k/n) times the unbiased max@(k-1)
    of the other samples. n == k gives Tang's max(g) - max(g_-i); k == 1 gives Eq. 26,
    g_i - mean(g_-i) (which needs n >= 2, and estimates n times grad pass@1)."""
    g = _rewards(rewards, k, "pkpo_loo_minus_one")
    n = g.shape[-1]
    if k == 1:
        if n < 2:
            raise ValueError("pkpo_loo_minus_one with k=1 is leave-one-out centring: needs n >= 2")
        return g - (g.sum(axis=-1, keepdims=True) - g) / (n - 1)
    gs, order = _sort(g)
    return _unsort(_s_sorted(gs, k) - k / n * _loo_max_at(gs, k - 1), order)
