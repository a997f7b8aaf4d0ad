"""ponder.verifiers: everything that scores a candidate, behind one batched interface.

    make_verifier("arith_step").score(prompts, candidates) -> [[step scores], ...]

A plain registry maps names to constructors; options are keyword arguments. Adding a verifier is
a new module and a registry entry.
"""

from __future__ import annotations

from collections.abc import Callable

from ponder.verifiers.arith import ArithOutcomeVerifier, ArithStepVerifier, NoisyVerifier
from ponder.verifiers.base import Verifier
from ponder.verifiers.code import CodeTestsVerifier
from ponder.verifiers.judge import LLMJudge
from ponder.verifiers.math_answer import ExactMatchVerifier, MathEquivVerifier, RegexMatchVerifier
from ponder.verifiers.process_reward_model import LastStepOutcome, ProcessRewardModel
from ponder.verifiers.reward_model import OutcomeRewardModel


def _noisy_step(flip_rate: float = 0.1, seed: int = 0) -> Verifier:
    return NoisyVerifier(ArithStepVerifier(), flip_rate=flip_rate, seed=seed)


def _noisy_outcome(flip_rate: float = 0.1, seed: int = 0) -> Verifier:
    return NoisyVerifier(ArithOutcomeVerifier(), flip_rate=flip_rate, seed=seed)


def _arith_prm(batch_size: int = 64, device: str = "cpu") -> Verifier:
    from ponder.tasks.arith import embedded_reward_model_path

    path = str(embedded_reward_model_path())
    return ProcessRewardModel(path, batch_size=batch_size, device=device, name="arith_prm")


def _arith_orm(batch_size: int = 64, device: str = "cpu") -> Verifier:
    return LastStepOutcome(_arith_prm(batch_size, device), name="arith_orm")


VERIFIERS: dict[str, Callable[..., Verifier]] = {
    "arith_outcome": ArithOutcomeVerifier,
    "arith_step": ArithStepVerifier,
    "arith_noisy_step": _noisy_step,
    "arith_noisy_outcome": _noisy_outcome,
    "math_equiv": MathEquivVerifier,
    "exact_match": ExactMatchVerifier,
    "regex_match": RegexMatchVerifier,
    "code_tests": CodeTestsVerifier,
    "orm": OutcomeRewardModel,  # path=<HF sequence-classification folder>
    "prm": ProcessRewardModel,  # path=..., convention=step_token|tag_token
    "arith_prm": _arith_prm,  # the learned arith PRM (tasks/arith/train_rm.py)
    "arith_orm": _arith_orm,  # the same checkpoint, last step's score as the outcome
    "judge": LLMJudge,  # path=<a model folder>: P(yes) to "is this solution correct?"
}


def make_verifier(name: str, **options) -> Verifier:
    if name not in VERIFIERS:
        raise ValueError(f"unknown verifier {name!r}; known: {sorted(VERIFIERS)}")
    try:
        return VERIFIERS[name](**options)
    except TypeError as exc:
        raise ValueError(f"bad options for verifier {name!r}: {exc}") from None


__all__ = ["VERIFIERS", "Verifier", "make_verifier"]
