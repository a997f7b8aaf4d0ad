"""ponder.embedded: the weights ponder ships, so that it runs with no download.

    model_path()         the tiny Llama-architecture arith model (a Hugging Face folder)
    reward_model_path()  the learned arith process reward model (a Hugging Face folder)

Data only: this package imports nothing from ponder, so every layer (the engine's default model,
the verifiers' learned PRM, the tasks) may read it. The task that the weights were trained on,
and the scripts that trained them, live in `ponder.tasks.arith`.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _folder(name: str, retrain: str) -> Path:
    path = _HERE / name
    if not (path / "config.json").is_file():
        raise RuntimeError(
            f"the embedded {name.replace('_', ' ')} is missing at {path}; reinstall ponder "
            f"(`pip install .`) or retrain it with `{retrain}`"
        )
    return path


def model_path() -> Path:
    """The shipped arith model folder; RuntimeError if the install lost it."""
    return _folder("model", "python -m ponder.tasks.arith.train --out <that folder>")


def reward_model_path() -> Path:
    """The shipped learned arith PRM folder; RuntimeError if the install lost it."""
    return _folder("reward_model", "python -m ponder.tasks.arith.train_rm --out <that folder>")


__all__ = ["model_path", "reward_model_path"]
