"""The arith world as a `Task`: seeded held-out problems, exact outcome and step checkers."""

from __future__ import annotations

from ponder.tasks.arith.problems import (
    ANSWER_PREFIX,
    DEFAULT_LEVEL,
    LEVELS,
    SPLITS,
    STEP_DELIMITER,
    generate,
)
from ponder.tasks.arith.verifiers import extract_answer
from ponder.tasks.base import Item, Task


class ArithTask(Task):
    name = "arith"
    outcome_verifier = "arith_outcome"
    process_verifier = "arith_step"
    step_delimiter = STEP_DELIMITER
    answer_prefix = ANSWER_PREFIX
    answer_pattern = r"-?[0-9]{1,9}"

    def __init__(self, level: int = DEFAULT_LEVEL, split: str = "heldout"):
        if level not in LEVELS:
            raise ValueError(f"unknown arith level {level}; known: {sorted(LEVELS)}")
        if split not in SPLITS:
            raise ValueError(f"unknown arith split {split!r}; known: {list(SPLITS)}")
        self.level, self.split = level, split

    def items(self, limit: int, seed: int) -> list[Item]:
        problems = generate(limit, split=self.split, seed=seed, difficulty=self.level)
        prefix = "arith" if self.split == "heldout" else f"arith-{self.split}"
        return [
            Item(f"{prefix}-{self.level}-{seed}-{i}", p.prompt, str(p.answer))
            for i, p in enumerate(problems)
        ]

    def extract_answer(self, text: str) -> str | None:
        return extract_answer(text)
