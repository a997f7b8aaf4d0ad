"""The arith task: seeded multi-step arithmetic problems and their step-by-step solutions.

A problem is an expression over non-negative integers with `+`, `-` and `*` (usual precedence,
left to right within a level), e.g. `12+7*3-5`. The reference solution reduces exactly one
operation per step and rewrites what is left, then states the answer:

    Q: 12+7*3-5            <- prompt (ends with the step delimiter)
    7*3=21;12+21-5         <- step: "<a><op><b>=<c>;<expression after the reduction>"
    12+21=33;33-5
    33-5=28;28
    A: 28                  <- final answer line, then EOS

Steps are separated by STEP_DELIMITER ("\\n"). Difficulty is the number of operations and the
operand range. Problems whose standard evaluation passes through a value outside [0, 999] are
skipped, so every reference value is a non-negative integer of at most three digits.

Splits are disjoint by construction, not by luck: an expression belongs to the held-out split iff
a stable hash of its text falls in the held-out bucket, so no seed can ever put a held-out
problem into training data. This module does no I/O and knows nothing about models.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

STEP_DELIMITER = "\n"
PROMPT_PREFIX = "Q: "
ANSWER_PREFIX = "A: "
OPERATORS = ("+", "-", "*")
SPLITS = ("train", "heldout")
_HELDOUT_BUCKETS = 8  # 1 in 8 expressions is held out
MAX_VALUE = 999  # every intermediate value has at most three digits


@dataclass(frozen=True, slots=True)
class Difficulty:
    """How hard a problem is: `num_ops` operations over operands in [0, max_operand]."""

    num_ops: int
    max_operand: int

    def __post_init__(self) -> None:
        if not 1 <= self.num_ops <= 12:
            raise ValueError(f"Difficulty.num_ops must be in [1, 12], got {self.num_ops}")
        if not 2 <= self.max_operand <= 999:
            raise ValueError(f"Difficulty.max_operand must be in [2, 999], got {self.max_operand}")


# Named levels; the default is the one whose measured pass@1/pass@16 sits in the target window
# (see tasks/arith/README.md and bench/results/arith_quality.json).
LEVELS: dict[int, Difficulty] = {
    1: Difficulty(num_ops=2, max_operand=9),
    2: Difficulty(num_ops=3, max_operand=12),
    3: Difficulty(num_ops=4, max_operand=15),
    4: Difficulty(num_ops=5, max_operand=20),
    5: Difficulty(num_ops=6, max_operand=25),
    6: Difficulty(num_ops=7, max_operand=25),
}
DEFAULT_LEVEL = 6


def level(n: int) -> Difficulty:
    if n not in LEVELS:
        raise ValueError(f"unknown arith difficulty level {n}; known levels: {sorted(LEVELS)}")
    return LEVELS[n]


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem with its reference solution. `steps` exclude the final answer line."""

    expression: str
    answer: int
    steps: tuple[str, ...]

    @property
    def prompt(self) -> str:
        return f"{PROMPT_PREFIX}{self.expression}{STEP_DELIMITER}"

    @property
    def solution(self) -> str:
        """The reference completion (everything after the prompt, without EOS)."""
        return STEP_DELIMITER.join((*self.steps, f"{ANSWER_PREFIX}{self.answer}"))

    @property
    def split(self) -> str:
        return split_of(self.expression)


# ----------------------------------------------------------------------------- expressions


def tokenize_expression(text: str) -> list[int | str]:
    """'12+7*3' -> [12, '+', 7, '*', 3]. Raises ValueError on anything else."""
    items: list[int | str] = []
    number = ""
    for ch in text:
        if "0" <= ch <= "9":  # ASCII only: str.isdigit() also accepts '²' and '١'
            number += ch
        elif ch in OPERATORS:
            if not number:
                raise ValueError(f"operator {ch!r} without a left operand in {text!r}")
            items.append(int(number))
            items.append(ch)
            number = ""
        else:
            raise ValueError(f"unexpected character {ch!r} in expression {text!r}")
    if not number:
        raise ValueError(f"expression {text!r} does not end with a number")
    items.append(int(number))
    return items


def render_expression(items: list[int | str]) -> str:
    return "".join(str(x) for x in items)


def next_reduction(items: list[int | str]) -> int:
    """Index of the operator the reference reduces next: the first '*', else the first +/-."""
    ops = range(1, len(items), 2)
    for i in ops:
        if items[i] == "*":
            return i
    return 1


def apply_op(a: int, op: str, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ValueError(f"unknown operator {op!r}")


def reduce_at(items: list[int | str], i: int) -> list[int | str]:
    a, op, b = items[i - 1], items[i], items[i + 1]
    return [*items[: i - 1], apply_op(a, op, b), *items[i + 2 :]]


def evaluate(items: list[int | str]) -> int:
    """Value with the usual precedence (products first, then left to right)."""
    while len(items) > 1:
        items = reduce_at(items, next_reduction(items))
    return int(items[0])


def reference_steps(expression: str) -> tuple[tuple[str, ...], int] | None:
    """The reference steps and answer, or None if an intermediate value leaves [0, MAX_VALUE]."""
    items = tokenize_expression(expression)
    steps = []
    while len(items) > 1:
        i = next_reduction(items)
        a, op, b = items[i - 1], items[i], items[i + 1]
        items = reduce_at(items, i)
        if not 0 <= items[i - 1] <= MAX_VALUE:
            return None
        steps.append(f"{a}{op}{b}={items[i - 1]};{render_expression(items)}")
    return tuple(steps), int(items[0])


# ----------------------------------------------------------------------------- generation


def split_of(expression: str) -> str:
    """'heldout' for a fixed 1/8 of all expressions (stable hash), else 'train'."""
    digest = hashlib.blake2b(expression.encode(), digest_size=8).digest()
    return "heldout" if int.from_bytes(digest, "little") % _HELDOUT_BUCKETS == 0 else "train"


def make_problem(expression: str) -> Problem:
    """The Problem for an expression; ValueError if it is malformed or goes negative."""
    solved = reference_steps(expression)
    if solved is None:
        raise ValueError(
            f"expression {expression!r} has an intermediate value outside [0, {MAX_VALUE}]"
        )
    steps, answer = solved
    return Problem(expression=expression, answer=answer, steps=steps)


def _random_expression(rng: random.Random, difficulty: Difficulty) -> str:
    items: list[int | str] = [rng.randint(0, difficulty.max_operand)]
    for _ in range(difficulty.num_ops):
        op = rng.choice(OPERATORS)
        # Keep products readable: one factor of a product stays a single digit.
        hi = min(9, difficulty.max_operand) if op == "*" else difficulty.max_operand
        items += [op, rng.randint(0, hi)]
    return render_expression(items)


def random_problem(rng: random.Random, *, split: str, difficulty: Difficulty) -> Problem:
    """One random problem of `split` drawn from `rng` (repeats are possible; see generate)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    for _ in range(10_000):
        expression = _random_expression(rng, difficulty)
        if split_of(expression) != split:
            continue
        solved = reference_steps(expression)
        if solved is not None:
            return Problem(expression=expression, answer=solved[1], steps=solved[0])
    raise RuntimeError(f"no valid {split} problem in 10,000 draws at {difficulty}")


def generate(
    n: int, *, split: str, seed: int = 0, difficulty: Difficulty | int = DEFAULT_LEVEL
) -> list[Problem]:
    """`n` distinct problems of one split, deterministic in (split, seed, difficulty)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    diff = level(difficulty) if isinstance(difficulty, int) else difficulty
    rng = random.Random(f"arith:{split}:{seed}:{diff.num_ops}:{diff.max_operand}")
    problems: dict[str, Problem] = {}
    draws = 0
    while len(problems) < n:
        draws += 1
        if draws > 50 * n + 1_000:
            raise RuntimeError(
                f"could only generate {len(problems)} of {n} distinct {split} problems at "
                f"{diff}; ask for fewer or a harder difficulty"
            )
        problem = random_problem(rng, split=split, difficulty=diff)
        problems.setdefault(problem.expression, problem)
    return list(problems.values())
