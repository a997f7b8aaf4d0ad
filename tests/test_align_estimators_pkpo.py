"""align PKPO estimators against brute-force subset averages and exact gradients."""

import numpy as np
import pytest
from align_brute import (
    brute_loo,
    brute_loo_minus_one,
    brute_s,
    exact_max_at_k,
    expected_gradient,
    numeric_grad,
    softmax,
)
from ponder.align.passk import pkpo_binary, pkpo_loo, pkpo_loo_minus_one, pkpo_s

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
