"""Validate a run's settings before any model loads: the shared front half of eval and signals.

`prepare_eval` / `prepare_signals` resolve the task, its items, the verifier (its name and
options checked against its constructor) and, for eval, the strategy and its options (checked
against the strategy's signature and requirements), and return them with the settings a run
file records. Every caller mistake becomes a click usage error naming what was wrong.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import click
from ponder.apps.run_file import RunFile
from ponder.engine.options import option_names
from ponder.strategies import SearchRequest, get_strategy
from ponder.tasks.base import Item, Task
from ponder.tasks.registry import VERIFIERS, get_task, make_verifier


@dataclass
class Prepared:
    task: Task
    items: list[Item]
    verifier: object
    settings: dict  # what the run file records (the runner's settings class takes it)


def usage(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (ValueError, OSError) as exc:
        raise click.UsageError(str(exc)) from None


def seeded_verifier_options(name: str, options: dict, seed: int) -> dict:
    """A verifier that takes a `seed` (the noisy ones) gets the run's seed unless told one."""
    factory = VERIFIERS.get(name)
    if factory is None or "seed" in options or hasattr(factory, "target"):
        return options  # lazily loaded generic verifiers take no seed
    accepts = option_names(factory) or []
    return {**options, "seed": seed} if "seed" in accepts else options


def _task_and_verifier(task, task_options, verifier_name, verifier_options, seed, limit, process):
    task_obj = usage(get_task, task, **task_options)
    name = verifier_name or usage(task_obj.default_verifier, process)
    options = seeded_verifier_options(name, verifier_options, seed)
    verifier = usage(make_verifier, name, **options)
    items = usage(task_obj.items, limit, seed)
    return task_obj, name, options, verifier, items


def prepare_eval(
    *, task, task_options, strategy, options, verifier_name, verifier_options, n, seed,
    temperature, limit, constrain_answer=False,
) -> Prepared:  # fmt: skip
    spec = usage(get_strategy, strategy)
    task_obj, name, vopts, verifier, items = _task_and_verifier(
        task, task_options, verifier_name, verifier_options, seed, limit, spec.process
    )
    probe = usage(SearchRequest, "probe", verifier, n=n, seed=seed, temperature=temperature)
    usage(spec.check, probe, options)
    if constrain_answer and task_obj.answer_constraint() is None:
        raise click.UsageError(f"task {task!r} has no answer format to constrain")
    settings = {
        "strategy": strategy, "n": n, "verifier": name, "verifier_options": vopts,
        "options": options, "temperature": temperature, "seed": seed, "task": task,
        "task_options": task_options, "constrain_answer": constrain_answer,
    }  # fmt: skip
    return Prepared(task_obj, items, verifier, settings)


def prepare_signals(
    *, task, task_options, verifier_name, verifier_options, objective, k, n, seed, limit
) -> Prepared:
    from ponder.apps.signals import check_objective

    usage(check_objective, objective, k, n)
    if task == "arith":
        task_options = {"split": "train", **task_options}
    task_obj, name, vopts, verifier, items = _task_and_verifier(
        task, task_options, verifier_name, verifier_options, seed, limit, False
    )
    if verifier.process:
        raise click.UsageError(f"signals need an outcome verifier; {name!r} scores steps")
    settings = {
        "objective": objective, "k": k, "n": n, "verifier": name, "verifier_options": vopts,
        "seed": seed, "task": task, "task_options": task_options,
    }  # fmt: skip
    return Prepared(task_obj, items, verifier, settings)


def check_run_file(out: str, settings, restart: bool) -> None:
    """Refuse, before the model loads, a run file that is not ours or holds another run."""
    path = Path(out)
    if not path.exists() or not path.stat().st_size:
        return
    usage(RunFile.check, path, asdict(settings), restart=restart)
