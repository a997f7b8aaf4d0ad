"""Math answers: extraction (GSM8K `####`, MATH `\\boxed{}`) and equivalence via math-verify.

    extract_math_answer("... so \\boxed{\\frac{1}{2}}") -> "\\frac{1}{2}"
    extract_math_answer("... #### 1,000") -> "1000"
    answers_equal("\\frac{1}{2}", "0.5") -> True

Extraction order: the last `\\boxed{...}` / `\\fbox{...}` (braces balanced, so nested `\\frac{}{}`
survive), else the text after the last `####`, else the number after the last "answer is" /
"Answer:", else None. A GSM8K-style number loses thousands separators, `$` and a trailing period.
Equivalence uses math-verify (sympy underneath: `\\frac{1}{2}` == 0.5, set order, LaTeX); it
falls back to exact string equality only for strings math-verify cannot parse.

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
_ANSWER_IS = re.compile(r"(?:answer is|answer:)\s*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)


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


def normalize_number(text: str) -> str:
    """'$1,000.' -> '1000'; strings that are not numbers come back stripped."""
    s = text.strip().rstrip(".").replace("$", "").strip()
    candidate = s.replace(",", "")
    if re.fullmatch(r"-?\d+(\.\d+)?", candidate):
        if "." in candidate:
            candidate = candidate.rstrip("0").rstrip(".")
        return candidate
    return s


def extract_math_answer(text: str) -> str | None:
    boxed = _last_boxed(text)
    if boxed is not None:
        return normalize_number(boxed) or None
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip().splitlines()
        return normalize_number(tail[0]) if tail and tail[0].strip() else None
    found = _ANSWER_IS.findall(text)
    return normalize_number(found[-1]) if found else None


def answers_equal(predicted: str | None, reference: str | None) -> bool:
    if predicted is None or reference is None:
        return False
    if normalize_number(predicted) == normalize_number(reference):
        return True
    from math_verify import parse, verify

    main = threading.current_thread() is threading.main_thread()
    limit = 5 if main else None  # signal.alarm only works on the main thread
    gold = parse(f"${reference}$", parsing_timeout=limit)
    pred = parse(f"${predicted}$", parsing_timeout=limit)
    if not gold or not pred:
        return False
    return bool(verify(gold, pred, timeout_seconds=limit))


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
