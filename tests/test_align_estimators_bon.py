"""align Best-of-N weights against check_bon.py's exact identities, by enumeration."""

import numpy as np
import pytest
from align_brute import expected_gradient, numeric_grad, softmax
from ponder.align.bon import (
    bon_rl_v_weights,
    bon_rl_weights,
    bon_rlb_positive_weight,
    bon_rlb_weights,
    bon_select,
)

# ---------------------------------------------------------------------------------------------
# Best-of-N


def test_bon_select_picks_the_best_and_the_first_of_ties():
    assert bon_select([0.1, 0.9, 0.9, 0.2]) == 1
    assert bon_select([float("-inf"), -3.0]) == 1
    assert list(bon_select([[0, 1, 1], [2, 0, 2], [0, 0, 0]])) == [1, 0, 0]
    with pytest.raises(ValueError, match="NaN"):
        bon_select([0.1, float("nan")])


def bon_draw_estimate(theta, reward, N, **kwargs):
    """E over all N-draws of the bon_rl_weights update, with the true p_fail passed in."""
    p_fail = float(softmax(theta) @ (1 - reward))
    kwargs.setdefault("eps", 1e-12)
    kwargs.setdefault("max_weight", np.inf)
    return expected_gradient(theta, N, lambda d: bon_rl_weights(reward[d], p_fail=p_fail, **kwargs))


@pytest.mark.parametrize("N", [1, 2, 3, 4])
def test_bon_rlb_weights_are_exact_for_the_bon_success_gradient(N):
    """check_bon.py's identity, through the whole pipeline (pick + weight) on every N-draw:
    E[g+ R grad log pi(y*) + g- (1-R) grad log pi(y*)] = grad (1 - p^N), PLUS sign on g-."""
    theta = np.array([0.3, -0.4, 0.8, 0.0, -0.2])
    reward = np.array([1.0, 0.0, 0.0, 1.0, 0.0])
    truth = numeric_grad(lambda t: 1 - (softmax(t) @ (1 - reward)) ** N, theta)
    np.testing.assert_allclose(bon_draw_estimate(theta, reward, N), truth, atol=1e-8)
    positives = bon_draw_estimate(theta, reward, N, positives_only=True)
    np.testing.assert_allclose(positives, truth, atol=1e-8)


def test_bon_rlb_minus_sign_would_be_biased_by_1_plus_p_over_1_minus_p():
    theta = np.array([0.3, -0.4, 0.8, 0.0, -0.2])
    reward = np.array([1.0, 0.0, 0.0, 1.0, 0.0])
    N, p = 4, float(softmax(theta) @ (1 - reward))
    g_plus, g_minus = bon_rlb_weights(p, N, eps=1e-12, max_weight=np.inf)

    def flipped(draws):
        w = bon_rl_weights(reward[draws], p_fail=p, eps=1e-12, max_weight=np.inf)
        return np.where(np.isclose(w, g_minus), -w, w)

    truth = numeric_grad(lambda t: 1 - (softmax(t) @ (1 - reward)) ** N, theta)
    np.testing.assert_allclose(
        expected_gradient(theta, N, flipped), truth * (1 + p) / (1 - p), atol=1e-8
    )


def test_bon_rl_weights_pick_one_sample_with_the_estimated_p():
    w = bon_rl_weights([0, 1, 1, 0])  # p_hat = 1/2, pick = sample 1 (first correct)
    g_plus, _ = bon_rlb_weights(0.5, 4)
    assert w == pytest.approx([0, float(g_plus), 0, 0])
    w = bon_rl_weights([0, 1, 1, 0], scores=[0.9, 0.1, 0.2, 0.3])  # the verifier picks a wrong one
    _, g_minus = bon_rlb_weights(0.5, 4)
    assert w == pytest.approx([float(g_minus), 0, 0, 0]) and g_minus > 0  # PLUS sign
    w = bon_rl_weights([[0, 0, 0], [1, 1, 1]])  # all fail: capped g-; all pass: p = 0 -> 0
    assert w == pytest.approx(np.array([[3.0, 0, 0], [0, 0, 0]]))
    w = bon_rl_weights([0, 0, 1], positives_only=True)
    assert w == pytest.approx([0, 0, float(bon_rlb_positive_weight(2 / 3, 3))])
    assert bon_rl_weights([0, 0, 0], positives_only=True) == pytest.approx([0, 0, 0])


def test_bon_weight_clipping_and_limits():
    for N in (2, 4, 8, 32):
        g_plus, g_minus = bon_rlb_weights(1.0, N, eps=0.01, max_weight=np.inf)
        at_clip = bon_rlb_weights(0.99, N, eps=0.01, max_weight=np.inf)
        assert np.isfinite(g_plus) and np.isfinite(g_minus)
        assert (g_plus, g_minus) == pytest.approx(at_clip)  # p is clipped to 1 - eps
        capped = bon_rlb_weights(1.0, N, eps=0.01, max_weight=5.0)
        assert max(capped) <= 5.0 and capped[1] == 5.0
        assert bon_rlb_weights(1.0, N)[1] == N  # default cap N bounds g- of all-fail groups
        # with p from the same N samples a correct pick has p <= 1 - 1/N: the default cap N
        # never touches g+
        unclipped = bon_rlb_weights(1 - 1 / N, N, max_weight=np.inf)[0]
        assert unclipped < N and bon_rlb_weights(1 - 1 / N, N)[0] == unclipped
        assert bon_rlb_weights(0.0, N) == (0.0, 0.0)  # easy prompt: no signal (N >= 2)
        assert bon_rlb_positive_weight(0.0, N) == 0.0
        # gbar+ tends to 1 as p -> 1 while g+ and g- grow like 1/(1-p)
        assert bon_rlb_positive_weight(1 - 1e-9, N, eps=1e-12, max_weight=np.inf) == pytest.approx(
            1.0, abs=1e-6
        )
        assert bon_rlb_weights(1 - 1e-6, N, eps=1e-12, max_weight=np.inf)[0] > 1e5
    p = np.array([0.0, 0.3, 0.7])  # one p per prompt
    g_plus, g_minus = bon_rlb_weights(p, 4, max_weight=np.inf)
    assert g_plus == pytest.approx(4 * p**3 / (1 - p**4))
    assert g_minus == pytest.approx(4 * p / (1 - p))
    with pytest.raises(ValueError, match="p_fail"):
        bon_rlb_weights(1.5, 4)
    with pytest.raises(ValueError, match="eps"):
        bon_rlb_weights(0.5, 4, eps=0.0)
    with pytest.raises(ValueError, match="max_weight"):
        bon_rlb_weights(0.5, 4, max_weight=0.0)


@pytest.mark.parametrize(
    ("N", "p"), [(2, 0.7), (2, 0.5), (3, 0.9), (4, 0.5), (4, 0.75), (8, 0.8), (32, 0.95)]
)
def test_bon_rlb_default_weights_are_the_reference_formulas(N, p):
    """At the defaults and a true p <= 1 - eps the weights are ALGORITHMS.md §2.2's closed forms,
    the ones check_bon.py verifies (N=2, p=0.7: g+ = 1.4/0.51 = 2.745, g- = 1.4/0.3 = 4.667):
    the default cap must not bind them, or the update stops being exact."""
    g_plus, g_minus = bon_rlb_weights(p, N)
    assert g_plus == pytest.approx(N * p ** (N - 1) / (1 - p**N), rel=1e-12)
    assert g_minus == pytest.approx(N * p / (1 - p), rel=1e-12)
    assert bon_rlb_positive_weight(p, N) == pytest.approx(
        N * p ** (N - 1) * (1 - p) / (1 - p**N), rel=1e-12
    )
    if (N, p) == (2, 0.7):
        assert (g_plus, g_minus) == pytest.approx((2.745098, 4.666667), abs=1e-6)


@pytest.mark.parametrize("N", [2, 3, 4])
def test_bon_rl_weights_at_the_defaults_are_exact_for_a_hard_prompt(N):
    """check_bon.py's identity at the DEFAULT eps and max_weight, with p_fail ~ 0.82 (weights
    well above N): the expected update over every N-draw is grad (1 - p^N)."""
    theta = np.array([-0.5, 0.4, 0.8, 0.6, 0.2])
    reward = np.array([1.0, 0.0, 0.0, 0.0, 0.0])
    p_fail = float(softmax(theta) @ (1 - reward))
    assert 0.8 < p_fail < 0.99
    truth = numeric_grad(lambda t: 1 - (softmax(t) @ (1 - reward)) ** N, theta)
    for positives_only in (False, True):
        estimate = expected_gradient(
            theta,
            N,
            lambda d, pos=positives_only: bon_rl_weights(
                reward[d], p_fail=p_fail, positives_only=pos
            ),
        )
        np.testing.assert_allclose(estimate, truth, atol=1e-8)


def test_bon_default_cap_binds_only_all_fail_groups():
    for N in (2, 4, 8):
        assert bon_rlb_weights(1.0, N) == (N, N)  # p = 1: the formulas diverge; cap N
        assert bon_rlb_weights(0.99, N)[1] == pytest.approx(N * 99)  # p < 1: uncapped
    # an explicit max_weight caps every weight at every p
    assert bon_rlb_weights(0.7, 2, max_weight=2.0) == (2.0, 2.0)
    assert bon_rlb_positive_weight(0.99, 2, max_weight=0.5) == 0.5
    assert bon_rl_weights([[0, 0, 0], [0, 1, 0]], scores=[[0, 0, 0], [1, 0, 0]]) == pytest.approx(
        np.array([[3.0, 0, 0], [6.0, 0, 0]])  # all fail: cap 3; p = 2/3, wrong pick: g- = 6
    )


def test_bon_rl_v_rewards_the_pick_with_its_score():
    assert bon_rl_v_weights([0.2, 0.7, 0.7, 0.1]) == pytest.approx([0, 0.7, 0, 0])
    assert bon_rl_v_weights([[0.1, float("-inf")], [0.0, 0.3]]) == pytest.approx(
        np.array([[0.1, 0], [0, 0.3]])
    )
    with pytest.raises(ValueError, match="not finite"):
        bon_rl_v_weights([float("-inf"), float("-inf")])
