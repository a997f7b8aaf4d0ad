"""The embedded arith world: a seeded arithmetic task and a tiny model trained on it.

`problems` generates problems and reference solutions, `tokenizer` builds the character-level
tokenizer, `train` trains the model shipped in `model/` (a Hugging Face folder), and
`embedded_model_path()` says where that checkpoint lives after installation.
"""

from __future__ import annotations

from pathlib import Path

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
    """The shipped checkpoint folder; RuntimeError if the install lost it."""
    path = Path(__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise RuntimeError(
            f"the embedded arith model is missing at {path}; reinstall ponder "
            "(`pip install .`) or retrain it with `python -m ponder.tasks.arith.train`"
        )
    return path


def embedded_reward_model_path() -> Path:
    """The shipped learned reward model (tasks/arith/train_rm.py); RuntimeError if missing."""
    path = Path(__file__).resolve().parent / "reward_model"
    if not (path / "config.json").is_file():
        raise RuntimeError(
            f"the arith reward model is missing at {path}; reinstall ponder or retrain it with "
            "`python -m ponder.tasks.arith.train_rm --out <that folder>`"
        )
    return path
