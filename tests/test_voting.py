"""strategies/voting.py: counts, the first-occurrence tie rule, None handling, weighted votes."""

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ponder.strategies.voting import (
    answer_counts,
    answer_weights,
    majority_vote,
    top_answer,
    weighted_majority_vote,
)

ANSWERS = st.lists(st.sampled_from(["a", "b", "c", "d", None]), max_size=12)


def reference_vote(answers, weights=None):
    """Brute force: the top total, then the earliest first occurrence among the tied."""
    weights = [1.0] * len(answers) if weights is None else weights
    totals: dict[str, float] = {}
    for a, w in zip(answers, weights, strict=True):
        if a is not None:
            totals[a] = totals.get(a, 0.0) + w
    if not totals:
        return None
    best = max(totals.values())
    tied = [a for a in totals if totals[a] == best]
    return min(tied, key=answers.index)


def test_counts_in_first_occurrence_order_without_none():
    counts = answer_counts(["b", None, "a", "b", "c", "a", "b"])
    assert counts == {"b": 3, "a": 2, "c": 1}
    assert list(counts) == ["b", "a", "c"]
    assert answer_counts([]) == {} and answer_counts([None, None]) == {}


def test_tie_goes_to_the_earliest_first_occurrence():
    assert majority_vote(["b", "a", "a", "b"]) == "b"
    assert majority_vote(["a", "b", "b", "a"]) == "a"
    assert majority_vote([None, "c", "d", "d", "c"]) == "c"
    # a later answer that reaches the count first still loses to the earlier first occurrence
    assert majority_vote(["x", "y", "y", "x"]) == "x"
    assert majority_vote(["x", "y", "y", "x", "y"]) == "y"  # a strict majority wins


def test_none_does_not_vote_and_no_votes_is_none():
    assert majority_vote([None, None, "x"]) == "x"
    assert majority_vote([None, "x", None, "y", "y"]) == "y"
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None
    assert weighted_majority_vote([None, None], [1.0, 2.0]) is None
    assert weighted_majority_vote([None, "a"], [100.0, 0.1]) == "a"  # None's weight is dropped


def test_weighted_vote_sums_weights_per_answer():
    assert weighted_majority_vote(["a", "b", "b"], [0.9, 0.5, 0.3]) == "a"
    assert weighted_majority_vote(["a", "b", "b"], [0.7, 0.5, 0.3]) == "b"
    assert weighted_majority_vote(["a", "b"], [0.5, 0.5]) == "a"  # tie: first occurrence
    assert weighted_majority_vote(["b", "a", "a"], [1.0, 0.5, 0.5]) == "b"  # exact tie at 1.0
    assert weighted_majority_vote(["a", "b"], [-1.0, -0.5]) == "b"  # negative weights allowed
    assert answer_weights(["a", "b", "a"], [0.25, 1.0, 0.5]) == {"a": 0.75, "b": 1.0}


def test_weighted_vote_rejects_bad_weights():
    with pytest.raises(ValueError, match="2 answers but 1 weights"):
        weighted_majority_vote(["a", "b"], [1.0])
    with pytest.raises(ValueError, match="finite"):
        weighted_majority_vote(["a", "b"], [1.0, float("nan")])
    with pytest.raises(ValueError, match="finite"):
        weighted_majority_vote(["a", "b"], [1.0, float("inf")])


def test_top_answer_on_an_empty_table():
    assert top_answer({}) is None


@settings(max_examples=60, deadline=None)
@given(ANSWERS)
def test_majority_matches_brute_force(answers):
    assert majority_vote(answers) == reference_vote(answers)
    counts = Counter(a for a in answers if a is not None)
    assert answer_counts(answers) == dict(counts)


@settings(max_examples=60, deadline=None)
@given(
    ANSWERS.flatmap(
        lambda a: st.tuples(
            st.just(a), st.lists(st.integers(0, 3), min_size=len(a), max_size=len(a))
        )
    )
)
def test_weighted_matches_brute_force_and_unit_weights_are_counts(case):
    answers, int_weights = case
    weights = [float(w) for w in int_weights]  # small integers: sums are exact, ties are real
    assert weighted_majority_vote(answers, weights) == reference_vote(answers, weights)
    assert weighted_majority_vote(answers, [1.0] * len(answers)) == majority_vote(answers)


def test_bom_with_a_constant_verifier_is_not_majority_voting():
    """strategies/bom.py: frequency only filters; a constant verifier ties every survivor, and
    the tie rule keeps the earliest, so k=1 returns the first answer with frequency >= alpha."""
    from ponder.strategies.bom import best_of_majority

    answers, flat = ["A", "B", "B"], [1.0, 1.0, 1.0]
    assert majority_vote(answers) == "B"
    assert best_of_majority(answers, flat, alpha=0.1, k=1) == ["A"]  # A passes the filter first
    assert best_of_majority(answers, flat, alpha=0.5, k=1) == ["B"]  # only B reaches 1/2
    assert best_of_majority(["A", "B", "C"], flat, alpha=0.5, k=1) == ["A"]  # none pass: top-up
    assert best_of_majority(answers, flat, alpha=0.1, k=2) == ["A", "B"]
