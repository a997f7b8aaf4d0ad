"""ponder.verifiers: everything that scores a candidate, behind one batched interface.

    make_verifier("math_equiv").score(prompts, candidates, references) -> [[step scores], ...]

`VERIFIERS` maps the generic verifiers' names to constructors; options are keyword arguments.
Task-specific verifiers (the arith world's exact and noisy checkers) live with their task and
join these in `ponder.tasks.registry`, the registry the applications use. Constructors are
imported on first use, so `import ponder.verifiers` (and the strategies, which use
`ponder.verifiers.aggregate`) never loads torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ponder.engine.options import check_options
from ponder.verifiers.base import Verifier


def _lazy(module: str, name: str) -> Callable[..., Verifier]:
    def make(**options) -> Verifier:
        return getattr(importlib.import_module(module), name)(**options)

    make.target = (module, name)  # what signature to validate options against
    return make


def _arith_prm(batch_size: int = 64, device: str = "cpu") -> Verifier:
    from ponder import embedded
    from ponder.verifiers.process_reward_model import ProcessRewardModel

    path = str(embedded.reward_model_path())
    return ProcessRewardModel(path, batch_size=batch_size, device=device, name="arith_prm")


def _arith_orm(batch_size: int = 64, device: str = "cpu") -> Verifier:
    from ponder.verifiers.process_reward_model import LastStepOutcome

    return LastStepOutcome(_arith_prm(batch_size, device), name="arith_orm")


VERIFIERS: dict[str, Callable[..., Verifier]] = {
    "math_equiv": _lazy("ponder.verifiers.math_answer", "MathEquivVerifier"),
    "exact_match": _lazy("ponder.verifiers.math_answer", "ExactMatchVerifier"),
    "regex_match": _lazy("ponder.verifiers.math_answer", "RegexMatchVerifier"),
    "code_tests": _lazy("ponder.verifiers.code", "CodeTestsVerifier"),
    # path=<HF sequence-classification folder>
    "orm": _lazy("ponder.verifiers.reward_model", "OutcomeRewardModel"),
    # path=..., convention=step_token|tag_token
    "prm": _lazy("ponder.verifiers.process_reward_model", "ProcessRewardModel"),
    "arith_prm": _arith_prm,  # the learned arith PRM shipped in ponder.embedded
    "arith_orm": _arith_orm,  # the same checkpoint, last step's score as the outcome
    # path=<a model folder>: P(yes) to "is this solution correct?"
    "judge": _lazy("ponder.verifiers.judge", "LLMJudge"),
}


def make_verifier(name: str, **options) -> Verifier:
    """A generic verifier by name; options are checked against its constructor first."""
    return build(VERIFIERS, name, options)


def build(registry: dict[str, Callable[..., Verifier]], name: str, options: dict) -> Verifier:
    """Construct `registry[name](**options)`, with a ValueError naming the valid options when
    one is unknown (checked before anything loads) and the unknown name when the name is."""
    if name not in registry:
        raise ValueError(f"unknown verifier {name!r}; known: {sorted(registry)}")
    factory = registry[name]
    target = getattr(factory, "target", None)
    if target is not None:
        factory_for_check = getattr(importlib.import_module(target[0]), target[1])
    else:
        factory_for_check = factory
    check_options(factory_for_check, options, f"verifier {name!r}")
    return factory(**options)


__all__ = ["VERIFIERS", "Verifier", "build", "make_verifier"]
