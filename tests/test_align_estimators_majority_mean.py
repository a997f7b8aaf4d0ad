"""align maj@k leave-one-out and mean-objective estimators against brute force."""

import itertools

import numpy as np
import pytest
from align_brute import (
    expected_gradient,
    numeric_grad,
    reference_vote,
    softmax,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from ponder.align.majority import answer_rewards, majority_loo_advantages
from ponder.align.mean import mean_advantages

# ---------------------------------------------------------------------------------------------
# maj@k leave-one-out


def brute_majority_loo(answers, gold):
    def r(a):
        return 1.0 if reference_vote(a) == gold else 0.0

    full = r(answers)
    return np.array([full - r(answers[:i] + answers[i + 1 :]) for i in range(len(answers))])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["7", "8", "9", None]), min_size=1, max_size=7))
def test_majority_loo_equals_brute_force(answers):
    np.testing.assert_array_equal(
        majority_loo_advantages(answers, {"7": 1.0}), brute_majority_loo(answers, "7")
    )


def test_majority_loo_respects_the_tie_rule():
    # [a, b, b, a]: a wins the tie. Dropping sample 0 -> [b, b, a], b wins; dropping 3 ->
    # [a, b, b], b wins; dropping 1 or 2 leaves a ahead.
    assert majority_loo_advantages(["a", "b", "b", "a"], {"a": 1.0}) == pytest.approx([1, 0, 0, 1])
    # [b, a, a, b]: b wins the tie, so a (the gold) gets no credit until it breaks the tie
    assert majority_loo_advantages(["b", "a", "a", "b"], {"a": 1.0}) == pytest.approx(
        [-1, 0, 0, -1]
    )
    # per-sample correctness works as the reward table; None never votes
    assert majority_loo_advantages([None, "a"], [0, 1]) == pytest.approx([0, 1])
    assert majority_loo_advantages(["a"], [1]) == pytest.approx([1])  # k = 1: f(empty) = default


def test_answer_rewards_rejects_inconsistent_per_sample_rewards():
    assert answer_rewards(["a", None, "b", "a"], [1, 5, 0, 1]) == {"a": 1.0, "b": 0.0}
    with pytest.raises(ValueError, match="equal answers equal rewards"):
        answer_rewards(["a", "a"], [1, 0])
    with pytest.raises(ValueError, match="2 answers but 3"):
        answer_rewards(["a", "a"], [1, 1, 1])


@pytest.mark.parametrize("k", [2, 3, 4])
def test_majority_loo_is_an_unbiased_gradient_of_maj_at_k(k):
    outcomes = ["a", "b", "a2", None]  # answers of four outcomes; "a" is gold
    theta = np.array([0.2, 0.5, -0.3, 0.1])
    table = {"a": 1.0, "b": 0.2}  # a partial-credit reward, to go beyond 0/1

    def vote_value(answers):
        winner = reference_vote(list(answers))
        return table.get(winner, 0.0) if winner is not None else 0.0

    def J(t):
        pi = softmax(t)
        return sum(
            np.prod(pi[list(draw)]) * vote_value([outcomes[i] for i in draw])
            for draw in itertools.product(range(4), repeat=k)
        )

    def weights(draws):
        return np.array([majority_loo_advantages([outcomes[i] for i in d], table) for d in draws])

    np.testing.assert_allclose(
        expected_gradient(theta, k, weights), numeric_grad(J, theta), atol=1e-8
    )


# ---------------------------------------------------------------------------------------------
# mean objective


def test_mean_baselines_against_their_definitions():
    r = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    loo = [r[i] - np.delete(r, i).mean() for i in range(5)]
    assert mean_advantages(r, "loo") == pytest.approx(loo)
    assert mean_advantages(r, "group") == pytest.approx(r - r.mean())
    std = np.std(r, ddof=1)
    assert mean_advantages(r, "group_std") == pytest.approx((r - r.mean()) / (std + 1e-6))
    for baseline in ("loo", "group", "group_std"):
        assert mean_advantages([0.5, 0.5, 0.5], baseline) == pytest.approx([0, 0, 0])
    R = np.random.default_rng(5).random((3, 4))
    np.testing.assert_allclose(mean_advantages(R, "loo"), [mean_advantages(x, "loo") for x in R])
    # the loo baseline is unbiased: its expected update is the gradient of the mean reward
    theta, values = np.array([0.1, 0.4, -0.2]), np.array([0.0, 1.0, 0.3])
    estimate = expected_gradient(theta, 3, lambda d: mean_advantages(values[d], "loo") / 3)
    np.testing.assert_allclose(
        estimate, numeric_grad(lambda t: softmax(t) @ values, theta), atol=1e-8
    )


def test_mean_errors():
    with pytest.raises(ValueError, match="unknown baseline"):
        mean_advantages([1.0, 0.0], "median")
    with pytest.raises(ValueError, match="n >= 2"):
        mean_advantages([1.0], "loo")
