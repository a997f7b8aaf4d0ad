"""Evaluation metrics over n samples per prompt: the unbiased pass@k estimator.

pass@k = 1 - C(n-c, k) / C(n, k) for n samples with c correct (Chen et al. 2021, arXiv
2107.03374), computed in the numerically stable product form 1 - prod_{i=n-c+1..n} (1 - k/i).
It is 1 when n - c < k. An unbiased estimator with n < k does not exist, so that is an error.
"""

from __future__ import annotations

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(
            f"pass_at_k needs 1 <= k <= n (no unbiased estimate for k > n), got k={k}, n={n}"
        )
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))
