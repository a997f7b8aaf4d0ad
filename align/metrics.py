"""Evaluation metrics over n samples per prompt: unbiased pass@k, max@k, and maj@k.

pass@k (Chen et al. 2021, arXiv 2107.03374; ALGORITHMS.md §7.4 [P]). For n samples with c
correct, the unbiased estimate of P(at least one of k fresh samples is correct) is

    pass@k = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1..n} (1 - k/i)

the product form being the numerically stable one. It is 1 when n - c < k. No unbiased
estimator exists for n < k (PKPO Corollary 2), so that is a ValueError, not a clamp.

max@k (PKPO, Walder & Karkhanis, arXiv 2505.15201, Eq. 12-14; ALGORITHMS.md §1.4 [P]). For
real rewards sorted ascending g_(1) <= ... <= g_(n), the mean of max over all k-subsets is

    rho(g; k) = sum_{i=k..n} [C(i-1, k-1) / C(n, k)] g_(i)

since g_(i) is the maximum of exactly C(i-1, k-1) subsets. `max_weights` computes those
coefficients by a ratio recurrence (never a large binomial); pass@k is max@k of 0/1 rewards.

maj@k: the expected reward of the majority vote (strategies.voting, same tie rule) over k of
the n samples drawn without replacement, i.e. the mean over all k-subsets. A subset keeps the
samples' original order, which the first-occurrence tie rule needs. Exact enumeration while
C(n, k) <= `exact_limit`, otherwise a seeded Monte-Carlo average over `draws` random subsets.

Array shapes: `pass_at_k` takes a scalar or an array of correct counts, `max_at_k` takes
(n,) or (P, n) rewards (P prompts); `maj_at_k` takes one prompt's answers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from ponder.align.majority import Rewards, answer_rewards, vote_reward


def _check_nk(n: int, k: int, what: str) -> None:
    if not 1 <= k <= n:
        raise ValueError(
            f"{what} needs 1 <= k <= n (no unbiased estimate for k > n), got k={k}, n={n}"
        )


def pass_at_k(n: int, c: ArrayLike, k: int) -> float | np.ndarray:
    """Unbiased pass@k for n samples with c correct; c may be an int or an array of counts
    (one per prompt), and the result is a float or an array of c's shape."""
    _check_nk(n, k, "pass_at_k")
    counts = np.asarray(c)
    if np.any(counts < 0) or np.any(counts > n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n, got c={c}, n={n}")
    i = np.arange(1, n + 1)  # (n,)
    # factor i contributes (1 - k/i) for i in n-c+1..n. When n - c < k that range includes i = k,
    # whose factor is 0, so the product form gives exactly 1 there by itself; `where` says so.
    in_range = i > (n - counts[..., None])  # (..., n)
    fail = np.prod(np.where(in_range, 1.0 - k / i, 1.0), axis=-1)
    out = np.where(n - counts < k, 1.0, 1.0 - fail)
    return float(out) if out.ndim == 0 else out


def max_weights(n: int, k: int) -> np.ndarray:
    """w_i = C(i-1, k-1) / C(n, k) for sorted positions i = 1..n; (n,), zero for i < k.

    From the top: w_n = k/n and w_{i-1} = w_i (i-k)/(i-1), so every factor is <= 1 and no
    binomial is ever formed (the ratio vanishes at i = k, zeroing all lower positions)."""
    _check_nk(n, k, "max_weights")
    i = np.arange(2, n + 1)
    ratios = np.clip((i - k) / (i - 1), 0.0, None)  # w_{i-1} / w_i, (n-1,)
    tail = np.cumprod(ratios[::-1])[::-1]  # prod_{m=i+1..n} ratio_m for i = 1..n-1
    return (k / n) * np.concatenate([tail, [1.0]])


def max_at_k(rewards: ArrayLike, k: int) -> float | np.ndarray:
    """Unbiased max@k, E[max of k samples], from n >= k samples; (n,) -> float, (P, n) -> (P,)."""
    g = np.asarray(rewards, dtype=float)
    out = np.sort(g, axis=-1) @ max_weights(g.shape[-1], k)
    return float(out) if np.ndim(out) == 0 else out


def maj_at_k(
    answers: Sequence[str | None],
    rewards: Rewards,
    k: int,
    *,
    default: float = 0.0,
    exact_limit: int = 50_000,
    draws: int = 20_000,
    seed: int = 0,
) -> float:
    """Expected reward of the majority vote over k of the n samples (without replacement).

    `rewards` is an answer -> reward mapping or a per-sample vector (see
    align.majority.answer_rewards); a vote with no answer, or an answer missing from the
    mapping, earns `default`. Exact while C(n, k) <= exact_limit, else the mean over `draws`
    uniformly random k-subsets from numpy's default_rng(seed)."""
    n = len(answers)
    _check_nk(n, k, "maj_at_k")
    table = answer_rewards(answers, rewards)
    if math.comb(n, k) <= exact_limit:
        subsets = itertools.combinations(range(n), k)  # each in increasing (original) order
        total = sum(vote_reward([answers[i] for i in s], table, default) for s in subsets)
        return total / math.comb(n, k)
    if draws < 1:
        raise ValueError(f"maj_at_k needs draws >= 1 for the Monte-Carlo path, got {draws}")
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(draws):
        s = np.sort(rng.choice(n, size=k, replace=False))  # sorted: keep the original order
        total += vote_reward([answers[i] for i in s], table, default)
    return total / draws
