"""The arith world as a `Task`: seeded held-out problems, exact outcome and step checkers."""

from __future__ import annotations

from ponder.tasks.arith.problems import DEFAULT_LEVEL, LEVELS, STEP_DELIMITER, generate
from ponder.tasks.base import Item, Task
from ponder.verifiers.arith import extract_answer


class ArithTask(Task):
    name = "arith"
    outcome_verifier = "arith_outcome"
    process_verifier = "arith_step"
    step_delimiter = STEP_DELIMITER

    def __init__(self, level: int = DEFAULT_LEVEL):
        if level not in LEVELS:
            raise ValueError(f"unknown arith level {level}; known: {sorted(LEVELS)}")
        self.level = level

    def items(self, limit: int, seed: int) -> list[Item]:
        problems = generate(limit, split="heldout", seed=seed, difficulty=self.level)
        return [
            Item(f"arith-{self.level}-{seed}-{i}", p.prompt, str(p.answer))
            for i, p in enumerate(problems)
        ]

    def extract_answer(self, text: str) -> str | None:
        return extract_answer(text)
