"""Math answers: extraction (GSM8K `####`, MATH `\\boxed{}`) and equivalence via math-verify.

    extract_math_answer("... so \\boxed{\\frac{1}{2}}") -> "\\frac{1}{2}"
    extract_math_answer("... #### 1,000") -> "1000"
    extract_math_answer("The answer is 3/4.") -> "3/4"
    answers_equal("\\frac{1}{2}", "0.5") -> True

Extraction order: the last `\\boxed{...}` / `\\fbox{...}` (braces balanced, so nested `\\frac{}{}`
survive), else the rest of the line after the last `####`, else the whole expression after the
last "answer is" / "Answer:" up to the end of its sentence (a period followed by a space or the
end, or a line break), else None. Never a prefix of the answer: "The answer is 3/4." gives
"3/4", not 3.

Normalisation (`normalize_number`, applied the same way to the candidate and the reference):
- `\\$` and `$` go everywhere: in a final answer they are currency or math delimiters, never
  content. `\\(...\\)` / `\\[...\\]` around the whole answer go too, and one sentence period.
- Commas are dropped only as thousands separators: the whole answer is a number whose groups
  after the first (1-3 digits, not starting with 0) have exactly three digits, `1,234` or
  `12,345,678.5` (LaTeX `{,}` and `,\\!` count as commas). Anything else with a comma ("1,2",
  "3,5") is a tuple or set answer and is left for math-verify to compare as one.
- A number loses trailing decimal zeros ("2.50" -> "2.5").
- `%` / `\\%` stay: math-verify treats x% as equal to both x and x/100, which also covers GSM8K
  references that drop the sign ("50\\%" vs "50"); stripping it on one side would lose the
  x/100 reading.
Equivalence: equal normalised strings, else math-verify on the normalised strings (sympy
underneath: `\\frac{1}{2}` == 0.5, set order, LaTeX, units in `\\text{}`). Empty answers are
never equal.

math-verify bounds its own work with `signal.alarm`, which only works on the main thread;
verifiers run in worker threads (SearchContext.score uses asyncio.to_thread), so off the main
thread its timeouts are disabled. The inputs here are short final answers, not free text.

Verifiers (reference answers come in `references`): `math_equiv` (1.0 when the extracted answer
is equivalent to the reference), `exact_match` (normalised string equality) and `regex_match`
(the first group of `pattern` in the candidate equals the reference).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

from ponder.verifiers.base import check_batch

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
# "answer is" / "answer:" as words (not "answer isn't"), then an optional colon.
_ANSWER_IS = re.compile(r"\banswer(?:\s+is\b|\s*:)\s*:?", re.IGNORECASE)
# The answer runs to its sentence end: a period before whitespace or the end, or a line break.
# A decimal point ("2.50") is followed by a digit, so it does not end the sentence.
_SENTENCE_END = re.compile(r"\.(?=\s|\Z)|\n")
_CURRENCY = re.compile(r"\\?\$")  # \$ first, so no stray backslash is left behind
_LATEX_COMMA = re.compile(r"\{,\}|,\\!")
_WRAPPED = re.compile(r"\\\((.*)\\\)|\\\[(.*)\\\]", re.DOTALL)
_THOUSANDS = re.compile(r"-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _last_boxed(text: str) -> str | None:
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[start : i - 1].strip()
    return None


def _after_last_answer_is(text: str) -> str | None:
    """The whole expression after the last "answer is" / "Answer:", up to its sentence end."""
    markers = list(_ANSWER_IS.finditer(text))
    if not markers:
        return None
    tail = text[markers[-1].end() :]
    end = _SENTENCE_END.search(tail)
    return tail[: end.start() if end else len(tail)].strip() or None


def normalize_number(text: str) -> str:
    """'$1,000.' -> '1000', '\\$18.50' -> '18.5', '1,2' -> '1,2' (a tuple, not 12); strings
    that are not numbers come back without currency signs, math delimiters and sentence period.
    The module docstring lists the rules."""
    s = _CURRENCY.sub("", text).strip()
    wrapped = _WRAPPED.fullmatch(s)
    if wrapped:
        s = (wrapped.group(1) if wrapped.group(1) is not None else wrapped.group(2)).strip()
    if s.endswith(".") and not s.endswith(".."):  # one sentence period, not an ellipsis
        s = s[:-1].rstrip()
    number = _LATEX_COMMA.sub(",", s)
    if _THOUSANDS.fullmatch(number):
        number = number.replace(",", "")
    if _NUMBER.fullmatch(number):
        if "." in number:
            number = number.rstrip("0").rstrip(".")
        return number
    return s


def extract_math_answer(text: str) -> str | None:
    boxed = _last_boxed(text)
    if boxed is not None:
        return normalize_number(boxed) or None
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip().splitlines()
        return (normalize_number(tail[0]) or None) if tail else None
    found = _after_last_answer_is(text)
    return (normalize_number(found) or None) if found else None


def answers_equal(predicted: str | None, reference: str | None) -> bool:
    if predicted is None or reference is None:
        return False
    pred, gold = normalize_number(predicted), normalize_number(reference)
    if not pred or not gold:
        return False
    if pred == gold:
        return True
    from math_verify import parse, verify

    main = threading.current_thread() is threading.main_thread()
    limit = 5 if main else None  # signal.alarm only works on the main thread
    # The normalised strings, so both sides reach math-verify with the same decorations removed.
    gold_parsed = parse(f"${gold}$", parsing_timeout=limit)
    pred_parsed = parse(f"${pred}$", parsing_timeout=limit)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=limit))


class MathEquivVerifier:
    name = "math_equiv"
    process = False

    def score(self, prompts, candidates, references=None) -> list[list[float]]:
        check_batch(prompts, candidates, references, need_references=True)
        return [
            [1.0 if answers_equal(extract_math_answer(c), r) else 0.0]
            for c, r in zip(candidates, references, strict=True)
        ]


class ExactMatchVerifier:
    """Normalised (stripped, case-folded, whitespace-collapsed) equality with the reference."""

    name = "exact_match"
    process = False

    def __init__(self, normalize: bool = True):
        self.normalize = normalize

    def _norm(self, text: str) -> str:
        return " ".join(text.split()).casefold() if self.normalize else text

    def score(self, prompts, candidates, references=None) -> list[list[float]]:
        check_batch(prompts, candidates, references, need_references=True)
        return [
            [1.0 if self._norm(c) == self._norm(r) else 0.0]
            for c, r in zip(candidates, references, strict=True)
        ]


class RegexMatchVerifier:
    """The first group of `pattern` (or the whole match) at its LAST match equals the reference."""

    name = "regex_match"
    process = False

    def __init__(self, pattern: str):
        try:
            self.pattern = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"regex_match: bad pattern {pattern!r}: {exc}") from None

    def _extract(self, text: str) -> str | None:
        matches = list(self.pattern.finditer(text))
        if not matches:
            return None
        m = matches[-1]
        return (m.group(1) if m.groups() else m.group(0)).strip()

    def score(self, prompts, candidates, references: Sequence[str] | None = None):
        check_batch(prompts, candidates, references, need_references=True)
        return [
            [1.0 if self._extract(c) == r.strip() else 0.0]
            for c, r in zip(candidates, references, strict=True)
        ]
