"""Exact verifiers for the embedded arith world, plus a noisy wrapper.

- `ArithOutcomeVerifier`: 1.0 iff the final `A: n` line states the true value.
- `ArithStepVerifier`: a perfect process reward. A step `a<op>b=c;rest` is valid iff it parses,
  `a op b == c`, `rest` is the previous expression with exactly one adjacent `a op b` replaced
  by `c`, and `rest` keeps the previous expression's value (which rules out precedence
  violations such as reducing 3+4 in 2*3+4). The answer line is valid iff it states the true
  value. A step scores 1.0 iff it and every step before it are valid: off track stays off track.
- `NoisyVerifier`: flips each score of a binary verifier with a given probability,
  deterministically in (seed, prompt, candidate prefix), so re-scoring a prefix gives the same
  answer, as a real reward model would.

They read the problem from the prompt text (`Q: <expr>\\n`) and never see model internals.
Unparseable text is a wrong step, never an exception.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ponder.tasks.arith.problems import (
    ANSWER_PREFIX,
    PROMPT_PREFIX,
    STEP_DELIMITER,
    evaluate,
    tokenize_expression,
)
from ponder.verifiers.base import Verifier, check_batch, split_steps


def parse_prompt(prompt: str) -> list[int | str]:
    """The expression of an arith prompt; ValueError if it is not one."""
    line = prompt.strip("\n").split("\n")[-1]
    if not line.startswith(PROMPT_PREFIX):
        raise ValueError(f"not an arith prompt (expected 'Q: <expression>'): {prompt!r}")
    try:
        return tokenize_expression(line[len(PROMPT_PREFIX) :].strip())
    except ValueError as exc:
        raise ValueError(f"not an arith prompt: {exc}") from None


def _int(text: str) -> int | None:
    text = text.strip()
    if text.startswith("+"):
        text = text[1:]
    digits = text[1:] if text[:1] == "-" else text
    ok = digits != "" and all("0" <= ch <= "9" for ch in digits)  # '²'.isdigit() is True
    return int(text) if ok else None


def extract_answer(text: str) -> str | None:
    """The integer on the last `A: ` line, normalised (no sign, no leading zeros), or None."""
    for line in reversed(text.split(STEP_DELIMITER)):
        if line.startswith(ANSWER_PREFIX):
            value = _int(line[len(ANSWER_PREFIX) :])
            return None if value is None else str(value)
    return None


def step_is_valid(previous: list[int | str], step: str) -> list[int | str] | None:
    """The expression after a valid step, or None if the step is invalid."""
    equation, sep, rest_text = step.partition(";")
    lhs, eq, c_text = equation.partition("=")
    if not sep or not eq:
        return None
    try:
        a, op, b = tokenize_expression(lhs)
        rest = tokenize_expression(rest_text)
    except ValueError:
        return None
    c = _int(c_text)
    expected = {"+": a + b, "-": a - b, "*": a * b}[op]
    if c is None or c != expected or len(rest) != len(previous) - 2:
        return None
    for i in range(1, len(previous), 2):
        if previous[i - 1 : i + 2] == [a, op, b]:
            candidate = [*previous[: i - 1], c, *previous[i + 2 :]]
            if candidate == rest and evaluate(rest) == evaluate(previous):
                return rest
    return None


class ArithOutcomeVerifier:
    name = "arith_outcome"
    process = False

    def score(
        self,
        prompts: Sequence[str],
        candidates: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[list[float]]:
        check_batch(prompts, candidates)
        out = []
        for prompt, text in zip(prompts, candidates, strict=True):
            truth = str(evaluate(parse_prompt(prompt)))
            out.append([1.0 if extract_answer(text) == truth else 0.0])
        return out


class ArithStepVerifier:
    name = "arith_step"
    process = True

    def score(
        self,
        prompts: Sequence[str],
        candidates: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[list[float]]:
        check_batch(prompts, candidates)
        return [self._score_one(p, c) for p, c in zip(prompts, candidates, strict=True)]

    def _score_one(self, prompt: str, text: str) -> list[float]:
        expression = parse_prompt(prompt)
        truth = evaluate(expression)
        scores: list[float] = []
        on_track = True
        for step in split_steps(text, STEP_DELIMITER):
            if on_track:
                if step.startswith(ANSWER_PREFIX):
                    on_track = _int(step[len(ANSWER_PREFIX) :]) == truth
                else:
                    after = step_is_valid(expression, step)
                    on_track = after is not None
                    expression = after if after is not None else expression
            scores.append(1.0 if on_track else 0.0)
        return scores


class NoisyVerifier:
    """Flips each score s of a binary verifier to 1 - s with probability `flip_rate`."""

    process: bool

    def __init__(self, base: Verifier, flip_rate: float, seed: int = 0):
        if not 0.0 <= flip_rate <= 1.0:
            raise ValueError(f"flip_rate must be in [0, 1], got {flip_rate}")
        self.base, self.flip_rate, self.seed = base, flip_rate, seed
        self.name = f"noisy_{base.name}"
        self.process = base.process

    def _flip(self, prompt: str, prefix: str) -> bool:
        key = f"{self.seed}\x00{prompt}\x00{prefix}".encode()
        draw = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
        return draw < self.flip_rate * 2**64  # exact at 0 and 1 (a float draw could round to 1)

    def score(
        self,
        prompts: Sequence[str],
        candidates: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[list[float]]:
        out = []
        for prompt, text, scores in zip(
            prompts, candidates, self.base.score(prompts, candidates, references), strict=True
        ):
            if self.process:
                steps = split_steps(text, STEP_DELIMITER)
                prefixes = [STEP_DELIMITER.join(steps[: i + 1]) for i in range(len(steps))]
            else:
                prefixes = [text]
            out.append(
                [
                    1.0 - s if self._flip(prompt, pre) else s
                    for s, pre in zip(scores, prefixes, strict=True)
                ]
            )
        return out
