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
from ponder.verifiers.math_answer import ExactMatchVerifier, MathEquivVerifier, RegexMatchVerifier
from ponder.verifiers.reward_model import OutcomeRewardModel, ProcessRewardModel


def _noisy_step(flip_rate: float = 0.1, seed: int = 0) -> Verifier:
    return NoisyVerifier(ArithStepVerifier(), flip_rate=flip_rate, seed=seed)


def _noisy_outcome(flip_rate: float = 0.1, seed: int = 0) -> Verifier:
    return NoisyVerifier(ArithOutcomeVerifier(), flip_rate=flip_rate, seed=seed)


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
}


def make_verifier(name: str, **options) -> Verifier:
    if name not in VERIFIERS:
        raise ValueError(f"unknown verifier {name!r}; known: {sorted(VERIFIERS)}")
    try:
        return VERIFIERS[name](**options)
    except TypeError as exc:
        raise ValueError(f"bad options for verifier {name!r}: {exc}") from None


__all__ = ["VERIFIERS", "Verifier", "make_verifier"]
