"""align estimators against brute force and exact expectations.

Brute force means averaging over every k-subset; "exact expectation" means enumerating every
n-sample draw from a small softmax policy over a handful of outcomes, weighting by its
probability, and comparing with a finite-difference gradient of the exact objective.
"""

import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from ponder.align import OBJECTIVES, group_advantages
from ponder.align.bon import (
    bon_rl_v_weights,
    bon_rl_weights,
    bon_rlb_positive_weight,
    bon_rlb_weights,
    bon_select,
)
from ponder.align.ctrl import calibrate, ctrl_rewards, transform
from ponder.align.loss import policy_gradient_loss
from ponder.align.majority import answer_rewards, majority_loo_advantages
from ponder.align.mean import mean_advantages
from ponder.align.metrics import maj_at_k, max_at_k, max_weights, pass_at_k
from ponder.align.passk import pkpo_binary, pkpo_loo, pkpo_loo_minus_one, pkpo_s

# ---------------------------------------------------------------------------------------------
# helpers: brute force and exact enumeration


def subset_average(n, k, term):
    """out[i] = (1/C(n,k)) sum over k-subsets I holding i of term(I, i)."""
    out = np.zeros(n)
    for subset in itertools.combinations(range(n), k):
        for i in subset:
            out[i] += term(subset, i)
    return out / math.comb(n, k)


def brute_s(g, k):
    return subset_average(len(g), k, lambda s, i: max(g[j] for j in s))


def brute_loo_minus_one(g, k):
    def term(s, i):
        rest = [g[j] for j in s if j != i]
        return max(g[j] for j in s) - (max(rest) if rest else 0.0)

    return subset_average(len(g), k, term)


def brute_loo(g, k):
    """Eq. 29 literally: s_i - (1/(n-1)) sum_{j != i} S(j, k, [n] minus i)."""
    n = len(g)
    out = brute_s(g, k)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        s_without_i = subset_average(n - 1, k, lambda s, _, o=others: max(g[o[j]] for j in s))
        out[i] -= s_without_i.sum() / (n - 1)
    return out


def reference_vote(answers):
    """Majority with the documented tie rule, written independently of voting.py."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    return min((a for a in counts if counts[a] == top), key=answers.index)


def softmax(theta):
    e = np.exp(theta - theta.max())
    return e / e.sum()


def numeric_grad(J, theta, h=1e-6):
    eye = np.eye(len(theta))
    return np.array([(J(theta + h * e) - J(theta - h * e)) / (2 * h) for e in eye])


def expected_gradient(theta, n, weights_of_draws):
    """E over all n-sample draws x ~ pi^n of sum_i w_i(x) grad log pi(x_i), exactly.

    weights_of_draws maps the (D, n) array of draws (outcome ids) to (D, n) weights."""
    pi = softmax(theta)
    K = len(theta)
    draws = np.array(list(itertools.product(range(K), repeat=n)))  # (D, n)
    prob = pi[draws].prod(axis=1)  # (D,)
    w = weights_of_draws(draws)  # (D, n)
    score = np.eye(K)[draws] - pi  # (D, n, K): grad of log softmax at each drawn outcome
    return np.einsum("d,di,dik->k", prob, w, score)


def exact_max_at_k(theta, values, k):
    """E[max of k iid outcome values] under softmax(theta), via the CDF of the maximum."""
    pi = softmax(theta)
    order = np.argsort(values, kind="stable")
    cdf = np.cumsum(pi[order])
    prev = np.concatenate([[0.0], cdf[:-1]])
    return float(np.sum(values[order] * (cdf**k - prev**k)))


# ---------------------------------------------------------------------------------------------
# pass@k, max@k, maj@k metrics


def test_pass_at_k_equals_the_combinatorial_form_and_the_subset_average():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                comb = 1.0 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(comb, abs=1e-12)
    correct = np.array([1, 0, 0, 1, 0, 0, 1])
    for k in range(1, 8):
        subsets = list(itertools.combinations(range(7), k))
        brute = np.mean([correct[list(s)].max() for s in subsets])
        assert pass_at_k(7, 3, k) == pytest.approx(brute, abs=1e-12)


def test_pass_at_k_vectorised_over_prompts_and_its_errors():
    counts = np.array([[0, 1, 5], [9, 10, 3]])
    out = pass_at_k(10, counts, 4)
    assert out.shape == (2, 3)
    for idx in np.ndindex(counts.shape):
        assert out[idx] == pytest.approx(pass_at_k(10, int(counts[idx]), 4))
    assert isinstance(pass_at_k(10, 3, 2), float)
    assert pass_at_k(10, 0, 10) == 0.0 and pass_at_k(10, 1, 10) == 1.0
    with pytest.raises(ValueError, match="k > n"):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(3, 4, 2)


def test_max_at_k_and_its_weights_match_brute_force():
    rng = np.random.default_rng(1)
    for n in range(1, 8):
        for k in range(1, n + 1):
            w = max_weights(n, k)
            assert w == pytest.approx(
                [math.comb(i - 1, k - 1) / math.comb(n, k) for i in range(1, n + 1)]
            )
            g = rng.integers(0, 3, n).astype(float) + (rng.random(n) if n % 2 else 0.0)
            brute = np.mean([max(g[list(s)]) for s in itertools.combinations(range(n), k)])
            assert max_at_k(g, k) == pytest.approx(brute)
    G = rng.random((4, 6))
    assert max_at_k(G, 3) == pytest.approx([max_at_k(row, 3) for row in G])
    assert max_weights(2000, 1000).sum() == pytest.approx(1.0)  # no overflowing binomials


def brute_maj_at_k(answers, gold, k):
    subsets = list(itertools.combinations(range(len(answers)), k))
    return np.mean([reference_vote([answers[i] for i in s]) == gold for s in subsets])


def test_maj_at_k_by_hand_and_the_tie_rule():
    # k = 2 of [a, a, b]: {0,1} -> a, {0,2} -> tie, a first, {1,2} -> tie, a first
    assert maj_at_k(["a", "a", "b"], {"a": 1.0}, 2) == pytest.approx(1.0)
    # k = 2 of [b, a, a]: {0,1} -> tie, b first; {0,2} -> b; {1,2} -> a
    assert maj_at_k(["b", "a", "a"], {"a": 1.0}, 2) == pytest.approx(1 / 3)
    assert maj_at_k(["b", "a", "a"], [0, 1, 1], 3) == 1.0  # k == n is the vote itself
    assert maj_at_k([None, "a", "b", None], {"a": 1.0}, 1) == pytest.approx(0.25)
    assert maj_at_k([None, None], {"a": 1.0}, 2, default=-1.0) == -1.0  # nobody votes


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["1", "2", "3", None]), min_size=1, max_size=8), st.data())
def test_maj_at_k_equals_brute_force_enumeration(answers, data):
    k = data.draw(st.integers(1, len(answers)))
    assert maj_at_k(answers, {"2": 1.0}, k) == pytest.approx(brute_maj_at_k(answers, "2", k))


def test_maj_at_k_monte_carlo_is_seeded_and_close_to_exact():
    rng = np.random.default_rng(3)
    answers = list(rng.choice(["x", "y", "z"], size=12, p=[0.45, 0.35, 0.2]))
    exact = maj_at_k(answers, {"x": 1.0}, 5)
    mc = maj_at_k(answers, {"x": 1.0}, 5, exact_limit=0, draws=4000, seed=7)
    assert mc == maj_at_k(answers, {"x": 1.0}, 5, exact_limit=0, draws=4000, seed=7)
    assert abs(mc - exact) < 0.03  # 4000 draws: standard error < 0.008


# ---------------------------------------------------------------------------------------------
# PKPO


def random_rewards(rng, n, trial):
    if trial % 3 == 0:
        return rng.integers(0, 2, n).astype(float)  # binary: many ties
    if trial % 3 == 1:
        return rng.integers(0, 4, n) / 3.0  # a few levels: ties among non-binary values
    return rng.normal(size=n)


def test_pkpo_s_loo_and_loo_minus_one_equal_brute_force_subset_averages():
    rng = np.random.default_rng(0)
    for trial in range(150):
        n = int(rng.integers(1, 8))
        k = int(rng.integers(1, n + 1))
        g = random_rewards(rng, n, trial)
        np.testing.assert_allclose(pkpo_s(g, k), brute_s(g, k), atol=1e-12)
        if k >= 2:
            np.testing.assert_allclose(
                pkpo_loo_minus_one(g, k), brute_loo_minus_one(g, k), atol=1e-12
            )
        if n > k:
            np.testing.assert_allclose(pkpo_loo(g, k), brute_loo(g, k), atol=1e-12)


def test_pkpo_at_n_equal_k_is_tangs_max_minus_leave_one_out_max():
    rng = np.random.default_rng(2)
    for n in range(2, 9):
        g = random_rewards(rng, n, n)
        tang = np.array([g.max() - np.delete(g, i).max() for i in range(n)])
        np.testing.assert_allclose(pkpo_loo_minus_one(g, n), tang, atol=1e-12)
    # binary: only a lone correct sample gets signal
    assert pkpo_loo_minus_one([0, 1, 0, 0], 4) == pytest.approx([0, 1, 0, 0])
    assert pkpo_loo_minus_one([0, 1, 1, 0], 4) == pytest.approx([0, 0, 0, 0])


def test_pkpo_k1_is_leave_one_out_mean_centring():
    g = np.array([1.0, 0.0, 0.5, 2.0])
    expected = [g[i] - np.delete(g, i).mean() for i in range(4)]
    assert pkpo_loo_minus_one(g, 1) == pytest.approx(expected)
    assert pkpo_s(g, 1) == pytest.approx(g / 4)


def test_pkpo_binary_eq8_equals_continuous_s_on_0_1_rewards():
    for n in range(1, 9):
        for k in range(1, n + 1):
            for c in range(n + 1):
                f = np.array([1.0] * c + [0.0] * (n - c))
                np.testing.assert_allclose(pkpo_binary(f, k), pkpo_s(f, k), atol=1e-12)
    with pytest.raises(ValueError, match="0/1"):
        pkpo_binary([0.0, 0.5], 1)


def test_pkpo_batches_and_keeps_the_input_order():
    rng = np.random.default_rng(4)
    G = rng.normal(size=(5, 7))
    for fn in (pkpo_s, pkpo_loo, pkpo_loo_minus_one):
        batched = fn(G, 3)
        assert batched.shape == (5, 7)
        for row, out in zip(G, batched, strict=True):
            np.testing.assert_allclose(out, fn(row, 3), atol=1e-12)
        perm = rng.permutation(7)  # permuting the samples permutes the weights
        np.testing.assert_allclose(fn(G[:, perm], 3), batched[:, perm], atol=1e-12)
    binary = rng.integers(0, 2, size=(6, 5)).astype(float)
    np.testing.assert_allclose(pkpo_binary(binary, 2), pkpo_s(binary, 2), atol=1e-12)


def test_pkpo_errors():
    with pytest.raises(ValueError, match="k > n"):
        pkpo_s([1.0, 2.0], 3)
    with pytest.raises(ValueError, match="n > k"):
        pkpo_loo([1.0, 2.0], 2)
    with pytest.raises(ValueError, match="non-finite"):
        pkpo_loo_minus_one([1.0, float("nan")], 2)
    with pytest.raises(ValueError, match="n >= 2"):
        pkpo_loo_minus_one([1.0], 1)


@pytest.mark.parametrize(
    ("n", "k", "fn", "scale"),
    [
        (4, 2, pkpo_s, 1),
        (4, 2, pkpo_loo, 1),
        (4, 2, pkpo_loo_minus_one, 1),
        (4, 3, pkpo_loo, 1),
        (4, 4, pkpo_loo_minus_one, 1),
        (5, 3, pkpo_loo_minus_one, 1),
        (4, 1, pkpo_s, 1),
        (4, 1, pkpo_loo, 1),
        (4, 1, pkpo_loo_minus_one, 4),  # Eq. 26 centring is not divided by n: n x the gradient
    ],
)
def test_pkpo_is_an_unbiased_gradient_of_max_at_k(n, k, fn, scale):
    theta = np.array([0.3, -0.5, 0.1])
    values = np.array([0.2, 1.0, 0.6])
    estimate = expected_gradient(theta, n, lambda d: fn(values[d], k))
    truth = numeric_grad(lambda t: exact_max_at_k(t, values, k), theta)
    np.testing.assert_allclose(estimate, scale * truth, atol=1e-8)


@pytest.mark.parametrize(("n", "k"), [(4, 2), (5, 3), (3, 3)])
def test_pkpo_binary_is_an_unbiased_gradient_of_pass_at_k(n, k):
    theta = np.array([0.4, -0.2, 0.0, -1.0])
    correct = np.array([0.0, 1.0, 0.0, 1.0])
    estimate = expected_gradient(theta, n, lambda d: pkpo_binary(correct[d], k))
    truth = numeric_grad(lambda t: 1 - (softmax(t) @ (1 - correct)) ** k, theta)
    np.testing.assert_allclose(estimate, truth, atol=1e-8)


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


# ---------------------------------------------------------------------------------------------
# CTRL


def test_calibration_counts_ties_half():
    ref = np.array([1.0, 2.0, 2.0, 3.0])
    assert calibrate([2.0, 0.0, 3.0, 5.0, 1.0], ref) == pytest.approx([0.5, 0.0, 0.875, 1.0, 0.125])
    # every reference set calibrated against itself averages exactly 1/2, ties or not
    for z in ([1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 5.0], np.arange(7.0)):
        assert calibrate(z, z).mean() == pytest.approx(0.5, abs=1e-15)


def test_calibration_is_uniform_under_the_reference_policy():
    rng = np.random.default_rng(6)
    reference = rng.normal(size=(8, 400))  # 8 prompts, m = 400
    samples = rng.normal(size=(8, 300))  # same distribution as the reference
    c = calibrate(samples, reference)
    assert c.shape == (8, 300) and c.min() >= 0 and c.max() <= 1
    counts = np.histogram(c, bins=10, range=(0, 1))[0] / c.size
    assert np.all(np.abs(counts - 0.1) < 0.02) and abs(c.mean() - 0.5) < 0.02
    np.testing.assert_allclose(c[3], calibrate(samples[3], reference[3]))


def test_ctrl_transforms_are_monotone():
    c = np.linspace(0, 1, 11)
    for t in (0.5, 2.0, 10.0):
        bon, won = transform(c, t, "bon"), transform(c, t, "won")
        assert np.all(np.diff(bon) > 0) and np.all(np.diff(won) > 0)
        assert np.all(np.diff(bon, 2) > 0) and np.all(np.diff(won, 2) < 0)  # convex / concave
        assert bon == pytest.approx(np.exp(t * c)) and won == pytest.approx(-np.exp(-t * c))
    r = ctrl_rewards([0.0, 2.0, 9.0], [1.0, 2.0, 3.0], t=2.0)
    assert r == pytest.approx(np.exp(2.0 * np.array([0.0, 0.5, 1.0])))


def test_ctrl_errors():
    for bad in (0.0, -1.0, float("nan"), float("inf"), "3", None):
        with pytest.raises(ValueError, match="t must be"):
            transform([0.5], bad)
    with pytest.raises(ValueError, match="unknown mode"):
        transform([0.5], 1.0, "median")
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        transform([1.5], 1.0)
    with pytest.raises(ValueError, match="m >= 1"):
        calibrate([1.0], [])
    with pytest.raises(ValueError, match="must be"):
        calibrate(np.zeros((2, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        calibrate([float("nan")], [1.0])


# ---------------------------------------------------------------------------------------------
# loss


def tiny_policy_logprobs(theta, tokens):
    """A context-free softmax policy over 4 tokens: log pi(token) for every position; (B, T)."""
    return torch.log_softmax(theta, dim=0)[tokens]


TOKENS = torch.tensor([[0, 2, 1, 3], [1, 1, 0, 2], [3, 0, 0, 0]])  # (B=3, T=4)
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
ADV = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)


def test_reinforce_gradient_is_minus_advantage_times_grad_logprob():
    theta = torch.tensor([0.1, -0.3, 0.2, 0.0], dtype=torch.float64, requires_grad=True)
    policy_gradient_loss(tiny_policy_logprobs(theta, TOKENS), ADV, MASK).backward()
    pi = torch.softmax(theta.detach(), dim=0)
    expected = torch.zeros(4, dtype=torch.float64)
    for b, t in MASK.nonzero().tolist():  # d log pi(x) / d theta = e_x - pi
        expected -= ADV[b] * (torch.nn.functional.one_hot(TOKENS[b, t], 4) - pi)
    torch.testing.assert_close(theta.grad, expected / MASK.sum())


def test_ppo_at_ratio_one_equals_reinforce():
    lp = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    policy_gradient_loss(lp, ADV, MASK).backward()
    reinforce = lp.grad.clone()
    lp.grad = None
    policy_gradient_loss(lp, ADV, MASK, old_logprobs=lp.detach().clone()).backward()
    torch.testing.assert_close(lp.grad, reinforce)


def test_ppo_clipping_zeroes_gradients_outside_the_trust_region():
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    old = torch.zeros(4, 1, dtype=torch.float64)
    # ratios 1.5, 0.5, 0.5, 1.5 with eps 0.2
    lp = torch.log(torch.tensor([[1.5], [0.5], [0.5], [1.5]], dtype=torch.float64)).requires_grad_()
    mask = torch.ones(4, 1, dtype=torch.bool)
    policy_gradient_loss(lp, adv, mask, old_logprobs=old, clip_eps=0.2).backward()
    g = lp.grad[:, 0]
    assert g[0] == 0 and g[2] == 0  # A > 0 past 1 + eps, A < 0 below 1 - eps: clipped
    assert g[1] == pytest.approx(-1.0 * 0.5 / 4) and g[3] == pytest.approx(1.0 * 1.5 / 4)


def test_mask_excludes_tokens():
    lp = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    loss = policy_gradient_loss(lp, ADV, MASK)
    loss.backward()
    assert torch.all(lp.grad[~MASK] == 0) and torch.all(lp.grad[MASK] != 0)
    junk = lp.detach().clone()
    junk[~MASK] = float("nan")  # padding log-probs never reach the loss
    assert policy_gradient_loss(junk, ADV, MASK).item() == pytest.approx(loss.item())
    empty = torch.zeros_like(MASK)
    assert policy_gradient_loss(lp, ADV, empty).item() == 0.0


def test_kl_term_vanishes_at_the_reference_and_is_k3_elsewhere():
    lp = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    base = policy_gradient_loss(lp, ADV, MASK)
    (base_grad,) = torch.autograd.grad(base, lp)
    same = policy_gradient_loss(lp, ADV, MASK, ref_logprobs=lp.detach(), kl_coef=1.0)
    (same_grad,) = torch.autograd.grad(same, lp)
    assert same.item() == pytest.approx(base.item())
    torch.testing.assert_close(same_grad, base_grad)
    ref = lp.detach() + 0.3
    with_kl = policy_gradient_loss(lp, ADV, MASK, ref_logprobs=ref, kl_coef=0.5)
    d = 0.3
    assert with_kl.item() == pytest.approx(base.item() + 0.5 * (math.exp(d) - d - 1))


def test_loss_errors():
    lp = torch.zeros(2, 3)
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="per sequence"):
        policy_gradient_loss(lp, torch.zeros(3), mask)
    with pytest.raises(ValueError, match="mask must match"):
        policy_gradient_loss(lp, torch.zeros(2), mask[:, :2])
    with pytest.raises(ValueError, match="needs ref_logprobs"):
        policy_gradient_loss(lp, torch.zeros(2), mask, kl_coef=0.1)
    with pytest.raises(ValueError, match="clip_eps"):
        policy_gradient_loss(lp, torch.zeros(2), mask, old_logprobs=lp, clip_eps=0.0)


# ---------------------------------------------------------------------------------------------
# registry


def test_registry_dispatches_to_the_estimators():
    r = np.array([0.0, 1.0, 0.0, 1.0])
    answers = ["3", "4", "3", "4"]
    assert set(OBJECTIVES) == {"mean", "passk", "majk", "bon_rl", "bon_rl_v"}
    assert group_advantages("mean", r) == pytest.approx(mean_advantages(r, "loo"))
    assert group_advantages("passk", r, k=2) == pytest.approx(pkpo_loo_minus_one(r, 2))
    assert group_advantages("passk", r) == pytest.approx(pkpo_loo_minus_one(r, 4))
    assert group_advantages("majk", r, answers=answers) == pytest.approx(
        majority_loo_advantages(answers, r)
    )
    assert group_advantages("bon_rl", r) == pytest.approx(bon_rl_weights(r))
    scores = [0.1, 0.2, 0.9, 0.3]
    assert group_advantages("bon_rl_v", r, scores=scores) == pytest.approx(bon_rl_v_weights(scores))
    with pytest.raises(ValueError, match="unknown objective"):
        group_advantages("pass@k", r)
    with pytest.raises(ValueError, match="needs the extracted answers"):
        group_advantages("majk", r)
    with pytest.raises(ValueError, match="exactly k"):
        group_advantages("majk", r, k=2, answers=answers)
    with pytest.raises(ValueError, match="needs verifier scores"):
        group_advantages("bon_rl_v", r)
