"""Brute-force and exact-enumeration helpers shared by the test_align_estimators_* files.

Brute force means averaging over every k-subset; "exact expectation" means enumerating every
n-sample draw from a small softmax policy over a handful of outcomes, weighting by its
probability, and comparing with a finite-difference gradient of the exact objective.
"""

import itertools
import math
from collections import Counter

import numpy as np


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
