"""Math answers: extraction (GSM8K `####`, MATH `\\boxed{}`, "The answer is"), math-verify
equivalence (also off the main thread), and the reference-reading rule verifiers."""

import threading

import pytest
from ponder.tasks.registry import make_verifier
from ponder.verifiers.math_answer import answers_equal, extract_math_answer, normalize_number


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the total is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("\\boxed{1} then \\boxed{\\sqrt{\\frac{3}{4}}}", "\\sqrt{\\frac{3}{4}}"),
        ("\\boxed{\\{1, \\{2\\}\\}}", "\\{1, \\{2\\}\\}"),
        ("\\fbox{42}", "42"),
        ("\\boxed {$1,000}", "1000"),
        ("She pays 5 * 2 = 10.\n#### 1,000", "1000"),
        ("#### 72\nextra words", "72"),
        ("The answer is $18.", "18"),
        ("The answer is 2.50.", "2.5"),
        ("The answer is 3.\nOn reflection the answer is 1,234,567.", "1234567"),
        ("Answer: -3", "-3"),
        ("#### 5 but \\boxed{6}", "6"),  # a boxed answer wins over ####
        ("no final answer here", None),
        ("#### ", None),
        ("\\boxed{unbalanced", None),
        ("", None),
    ],
)
def test_extraction(text, expected):
    assert extract_math_answer(text) == expected


@pytest.mark.parametrize(
    ("raw", "expected"), [("$1,000.", "1000"), ("2.500", "2.5"), ("-7", "-7"), (" x+1 ", "x+1")]
)
def test_normalize_number(raw, expected):
    assert normalize_number(raw) == expected


def test_equivalence_uses_math_verify():
    assert answers_equal("\\frac{1}{2}", "0.5")
    assert answers_equal("1,000", "1000")
    assert answers_equal("\\{1, 2\\}", "\\{2, 1\\}")
    assert answers_equal("\\sqrt{4}", "2")
    assert not answers_equal("3", "4")
    assert not answers_equal("\\frac{1}{3}", "0.3")
    assert not answers_equal(None, "4") and not answers_equal("4", None)


def test_equivalence_works_off_the_main_thread():
    # math-verify bounds its work with signal.alarm, which fails off the main thread; verifiers
    # run in worker threads (SearchContext.score uses asyncio.to_thread).
    out = []
    worker = threading.Thread(target=lambda: out.append(answers_equal("\\frac{2}{4}", "0.5")))
    worker.start()
    worker.join()
    assert out == [True]


def test_math_equiv_scores_against_references():
    math = make_verifier("math_equiv")
    candidates = ["The answer is 0.5.", "#### 3", "so \\boxed{1,000}", "I am not sure."]
    references = ["\\frac{1}{2}", "4", "1000", "1"]
    assert math.score(["q"] * 4, candidates, references) == [[1.0], [0.0], [1.0], [0.0]]
    assert math.name == "math_equiv" and not math.process


@pytest.mark.parametrize("name", ["math_equiv", "exact_match"])
def test_reference_verifiers_need_references(name):
    verifier = make_verifier(name)
    with pytest.raises(ValueError, match="needs references"):
        verifier.score(["q"], ["x"])
    with pytest.raises(ValueError, match="one reference per candidate"):
        verifier.score(["q"], ["x"], ["1", "2"])


def test_exact_match_normalises_unless_told_not_to():
    assert make_verifier("exact_match").score(["q"], ["  Paris\n "], ["paris"]) == [[1.0]]
    raw = make_verifier("exact_match", normalize=False)
    assert raw.score(["q", "q"], [" Paris", "Paris"], ["Paris", "Paris"]) == [[0.0], [1.0]]


def test_regex_match_uses_the_last_match_and_its_first_group():
    regex = make_verifier("regex_match", pattern=r"ANSWER: (\w+)")
    candidates = ["ANSWER: a ... ANSWER: b", "none", "ANSWER: a"]
    assert regex.score(["q"] * 3, candidates, ["b"] * 3) == [[1.0], [0.0], [0.0]]
    whole = make_verifier("regex_match", pattern=r"\d+")
    assert whole.score(["q"], ["1 then 42"], ["42"]) == [[1.0]]
    with pytest.raises(ValueError, match="needs references"):
        regex.score(["q"], ["ANSWER: b"])
    with pytest.raises(ValueError, match="bad pattern"):
        make_verifier("regex_match", pattern="(")
    with pytest.raises(ValueError, match="verifier 'regex_match' needs option 'pattern'"):
        make_verifier("regex_match")
