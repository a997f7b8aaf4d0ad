"""maj@k leave-one-out advantages: Tang, Zheng, Synnaeve, Munos (ICML 2025), arXiv 2503.19595.

ALGORITHMS.md §1.1-1.2 [S]. For a group of k samples with extracted answers a_1..a_k and a
reward per answer r(a) (1 for the gold answer, 0 otherwise, or any real):

    f(a_1..a_k) = r(maj(a_1..a_k))          A_i = f(a_1..a_k) - f(a_-i)

where a_-i is the group without sample i. The baseline f(a_-i) does not depend on sample i and
the samples are iid, so sum_i A_i grad log pi(y_i) is an unbiased estimate of the gradient of
E[r(maj(y_1..y_k))]. A_i is non-zero only when dropping sample i changes the vote's reward.

maj is `strategies.voting.majority_vote`: None answers do not vote and ties go to the answer
whose first occurrence is earliest. The tie rule is our implementation note [ALGORITHMS.md
§1.2], not the paper's; any fixed rule keeps the estimator unbiased, but it must be the same
rule the evaluation uses, hence the one shared implementation. When no sample has an answer
(or k == 1 and the one sample is left out) the vote is None and earns `default`.

The group size is k (Tang et al. use n == k); for n > k samples there is no cheap exact
subset average as PKPO has for max@k, so this module does not offer one. Cost O(k^2) per group.
One group at a time: answers are strings, so there is nothing to vectorise over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from ponder.strategies.voting import majority_vote

# A reward per answer, or one per sample (consistent across samples with the same answer).
Rewards = Mapping[str, float] | Sequence[float] | np.ndarray


def answer_rewards(answers: Sequence[str | None], rewards: Rewards) -> dict[str, float]:
    """The reward table answer -> reward.

    `rewards` is either that table already (answers missing from it earn the caller's default)
    or a per-sample vector aligned with `answers`, e.g. correctness; then samples with the same
    answer must have the same reward. A None answer's per-sample reward is ignored: its vote
    does not count, so it can never be the majority."""
    if isinstance(rewards, Mapping):
        return {str(a): float(r) for a, r in rewards.items()}
    values = np.asarray(rewards, dtype=float).reshape(-1)
    if len(values) != len(answers):
        raise ValueError(f"{len(answers)} answers but {len(values)} per-sample rewards")
    table: dict[str, float] = {}
    for i, (a, r) in enumerate(zip(answers, values, strict=True)):
        if a is None:
            continue
        if a in table and table[a] != r:
            raise ValueError(
                f"answer {a!r} has reward {table[a]} and, at sample {i}, {r}; a per-sample "
                "reward vector must give equal answers equal rewards (pass a mapping instead)"
            )
        table[a] = float(r)
    return table


def vote_reward(answers: Sequence[str | None], table: Mapping[str, float], default: float) -> float:
    """r(maj(answers)); `default` when nobody votes or the winner is not in the table."""
    winner = majority_vote(answers)
    return default if winner is None else table.get(winner, default)


def majority_loo_advantages(
    answers: Sequence[str | None], rewards: Rewards, *, default: float = 0.0
) -> np.ndarray:
    """A_i = r(maj(a_1..a_k)) - r(maj(a_-i)) for one group of k = len(answers) samples; (k,)."""
    k = len(answers)
    if k == 0:
        raise ValueError("majority_loo_advantages needs at least one sample")
    table = answer_rewards(answers, rewards)
    full = vote_reward(answers, table, default)
    loo = [vote_reward([*answers[:i], *answers[i + 1 :]], table, default) for i in range(k)]
    return full - np.asarray(loo, dtype=float)
