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


# ---------------------------------------------------------------------------------------------
# review defects: commas, currency, the "answer is" fallback (each a class; one case per member)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\boxed{3,5}", "3,5"),  # a tuple/set answer keeps its comma
        ("#### 1,2", "1,2"),
        ("\\boxed{1,23}", "1,23"),  # groups of fewer than three digits: not a separator
        ("\\boxed{1,2345}", "1,2345"),  # ... nor of more than three
        ("\\boxed{0,500}", "0,500"),  # a leading 0 group: not a thousands number
        ("The answer is 12,345,678.", "12345678"),
        ("\\boxed{-1,234.50}", "-1234.5"),
        ("\\boxed{10,\\!000}", "10000"),  # MATH's LaTeX thousands separators
        ("\\boxed{10{,}000}", "10000"),
    ],
)
def test_only_thousands_separators_are_dropped(text, expected):
    assert extract_math_answer(text) == expected


def test_comma_answers_do_not_compare_as_the_concatenated_number():
    assert not answers_equal("1,2", "12")
    assert not answers_equal("12", "1,2")
    assert not answers_equal("3,5", "35")
    assert answers_equal("3,5", "5,3")  # math-verify compares them as sets
    assert answers_equal("12,345,678", "12345678")
    math = make_verifier("math_equiv")
    assert math.score(["q"] * 2, ["\\boxed{3,5}", "#### 1,2"], ["35", "12"]) == [[0.0], [0.0]]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\boxed{\\$18}", "18"),
        ("\\boxed{\\$18.50}", "18.5"),
        ("#### \\$18", "18"),
        ("The answer is \\$1,000.", "1000"),
        ("The answer is -$5.", "-5"),
    ],
)
def test_escaped_dollar_signs_are_currency(text, expected):
    assert extract_math_answer(text) == expected


def test_currency_and_percent_normalise_the_same_on_both_sides():
    math = make_verifier("math_equiv")
    assert math.score(["q"], ["so \\boxed{\\$18}"], ["18"]) == [[1.0]]
    assert answers_equal("18", "\\$18.00")  # the reference may carry the decoration instead
    assert answers_equal("\\$18", "$18")
    # math-verify's percent convention: x\% equals both x (GSM8K references drop the sign) and
    # x/100; it never equals some other number.
    candidates = ["\\boxed{50\\%}"] * 3 + ["#### 50"]
    references = ["50", "0.5", "5", "50\\%"]
    assert math.score(["q"] * 4, candidates, references) == [[1.0], [1.0], [0.0], [1.0]]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 3/4.", "3/4"),
        ("Answer: 10^6", "10^6"),
        ("The answer is -2.5.", "-2.5"),
        ("The answer is 0.75\nbecause 3/4 = 0.75", "0.75"),
        ("The answer is \\frac{3}{4}.", "\\frac{3}{4}"),
        ("The answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),
        ("The answer is \\(x^2 + 1\\).", "x^2 + 1"),
        ("The answer is: 7.", "7"),
        ("The answer is 2, then the answer is 3/4.", "3/4"),  # the LAST marker, whole expression
        ("The answer is 7.\nThe answer isn't obvious, though.", "7"),  # a word, not a prefix
    ],
)
def test_answer_is_fallback_takes_the_whole_expression(text, expected):
    assert extract_math_answer(text) == expected


def test_answer_is_fallback_never_scores_a_prefix():
    math = make_verifier("math_equiv")
    candidates = ["The answer is 3/4.", "Answer: 10^6", "The answer is 3/4.", "Answer: 10^6"]
    references = ["3", "10", "0.75", "1000000"]
    assert math.score(["q"] * 4, candidates, references) == [[0.0], [0.0], [1.0], [1.0]]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1, 2, ...", "1, 2, ..."), ("5.", "5"), ("$\\frac{1}{2}$", "\\frac{1}{2}"), ("", "")],
)
def test_normalize_strips_one_sentence_period_and_math_delimiters(raw, expected):
    assert normalize_number(raw) == expected


def test_empty_answers_are_never_equal():
    assert not answers_equal("", "") and not answers_equal("$", "\\$")
