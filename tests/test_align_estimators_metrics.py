"""align metrics (pass@k, max@k, maj@k) against brute force and exact expectations."""

import itertools
import math

import numpy as np
import pytest
from align_brute import (
    reference_vote,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from ponder.align.metrics import maj_at_k, max_at_k, max_weights, pass_at_k

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
