"""Arith verifiers on hand-written solutions, the noisy wrapper, aggregation, the registry."""

import pytest
from ponder.tasks.arith import generate
from ponder.tasks.arith.verifiers import extract_answer
from ponder.tasks.registry import make_verifier
from ponder.verifiers.aggregate import aggregate
from ponder.verifiers.base import split_steps

Q = "Q: 2*3+4\n"
outcome, steps = make_verifier("arith_outcome"), make_verifier("arith_step")


@pytest.mark.parametrize(
    "text, step_scores, correct",
    [
        ("2*3=6;6+4\n6+4=10;10\nA: 10", [1, 1, 1], 1),
        ("2*3=6;6+4\n6+4=10;10\n", [1, 1], 0),  # a partial solution: no answer yet
        ("2*3=7;7+4\n7+4=11;11\nA: 11", [0, 0, 0], 0),  # wrong arithmetic
        ("2*3=6;6+5\n6+5=11;11\nA: 11", [0, 0, 0], 0),  # wrong rewrite
        ("3+4=7;2*7\n2*7=14;14\nA: 14", [0, 0, 0], 0),  # precedence violation
        ("2*3=6;6+4\nA: 10", [1, 1], 1),  # skipping the last step is not wrong, just terse
        ("2*3=6;6+4\n6+4=10;10\nA: 11", [1, 1, 0], 0),  # right steps, wrong answer
        ("2*3=6;6+4\n6+4=11;11\nA: 10", [1, 0, 0], 1),  # right answer after a wrong step
        ("garbage\nA: 10", [0, 0], 1),
        ("", [], 0),
    ],
)
def test_hand_written_solutions(text, step_scores, correct):
    assert steps.score([Q], [text]) == [[float(s) for s in step_scores]]
    assert outcome.score([Q], [text]) == [[float(correct)]]


def test_reference_solutions_score_one_everywhere():
    problems = generate(100, split="heldout", seed=2, difficulty=6)
    prompts, texts = [p.prompt for p in problems], [p.solution for p in problems]
    assert all(s == [1.0] for s in outcome.score(prompts, texts))
    assert all(set(s) == {1.0} and len(s) == 8 for s in steps.score(prompts, texts))


def test_extract_answer_and_errors():
    assert extract_answer("x\nA: 007") == "7" and extract_answer("A: +3") == "3"
    assert extract_answer("A: 1\nA: 2") == "2" and extract_answer("A: x") is None
    assert extract_answer("no answer") is None
    assert extract_answer("A: ²") is None and extract_answer("A: ١") is None  # never raises
    assert steps.score([Q], ["2*3=٦;6+4"]) == [[0.0]]
    with pytest.raises(ValueError, match="one prompt per candidate"):
        outcome.score([Q, Q], ["A: 10"])
    with pytest.raises(ValueError, match="not an arith prompt"):
        outcome.score(["hello"], ["A: 1"])
    with pytest.raises(ValueError, match="unknown verifier"):
        make_verifier("nope")
    with pytest.raises(ValueError, match="flip_rate"):
        make_verifier("arith_noisy_step", flip_rate=2)


def test_noisy_verifier_is_consistent_and_flips_at_its_rate():
    problems = generate(300, split="heldout", seed=3, difficulty=6)
    prompts, texts = [p.prompt for p in problems], [p.solution for p in problems]
    noisy = make_verifier("arith_noisy_step", flip_rate=0.2, seed=7)
    first = noisy.score(prompts, texts)
    assert first == noisy.score(prompts, texts)  # deterministic
    # A prefix gets the same noisy scores as the full solution's first steps.
    prefix = ["\n".join(t.split("\n")[:3]) + "\n" for t in texts]
    assert [s[:3] for s in first] == noisy.score(prompts, prefix)
    flips = sum(s == 0.0 for row in first for s in row) / sum(len(r) for r in first)
    assert 0.17 < flips < 0.23
    assert make_verifier("arith_noisy_step", flip_rate=0.0).score(prompts, texts) == steps.score(
        prompts, texts
    )
    inverted = make_verifier("arith_noisy_step", flip_rate=1.0).score(prompts[:5], texts[:5])
    assert all(set(r) == {0.0} for r in inverted)
    assert make_verifier("arith_noisy_step", seed=8, flip_rate=0.2).score(prompts, texts) != first


def test_aggregation():
    assert aggregate([1, 0.5, 0.25], "last") == 0.25
    assert aggregate([1, 0.5, 0.25], "min") == 0.25
    assert aggregate([1, 0.5, 0.25], "prod") == 0.125
    assert aggregate([1, 0.5, 0.0], "mean") == 0.5
    assert aggregate([0.7], "model") == 0.7
    with pytest.raises(ValueError, match="exactly one"):
        aggregate([0.7, 0.1], "model")
    with pytest.raises(ValueError, match="empty"):
        aggregate([], "last")
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate([1.0], "max")
    assert split_steps("a\nb\n", "\n") == ["a", "b"] and split_steps("a\n\nb", "\n") == [
        "a",
        "",
        "b",
    ]
