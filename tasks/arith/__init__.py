"""The embedded arith world: a seeded arithmetic task and a tiny model trained on it.

`problems` generates problems and reference solutions, `tokenizer` builds the character-level
tokenizer, `train` trains the model shipped in `model/` (a Hugging Face folder), and
`embedded_model_path()` says where that checkpoint lives after installation (the weights are
kept in `ponder.embedded`, below every layer).
"""

from __future__ import annotations

from pathlib import Path

from ponder import embedded
from ponder.tasks.arith.problems import (
    DEFAULT_LEVEL,
    LEVELS,
    STEP_DELIMITER,
    Difficulty,
    Problem,
    generate,
    level,
    make_problem,
)

__all__ = [
    "DEFAULT_LEVEL",
    "LEVELS",
    "STEP_DELIMITER",
    "Difficulty",
    "Problem",
    "embedded_model_path",
    "embedded_reward_model_path",
    "generate",
    "level",
    "make_problem",
]


def embedded_model_path() -> Path:
    """The shipped checkpoint folder (kept in `ponder.embedded`); RuntimeError if missing."""
    return embedded.model_path()


def embedded_reward_model_path() -> Path:
    """The shipped learned reward model (tasks/arith/train_rm.py); RuntimeError if missing."""
    return embedded.reward_model_path()
