"""The `ponder` command line: one console script, one subcommand per job.

Subcommands parse and validate arguments, then call library code; no search logic lives here.
Bad arguments end in a one-line error (click's usage error), never a traceback.
"""

from __future__ import annotations

import json
import time
from importlib.metadata import version

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version("ponder"), "--version", "-V", prog_name="ponder")
def main() -> None:
    """ponder: inference-time search and decoding for language models."""


@main.command()
@click.option(
    "--limit",
    default=5,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Number of held-out problems.",
)
@click.option(
    "--level",
    "difficulty",
    default=None,
    type=int,
    help="Difficulty level (default: the task's default level).",
)
@click.option(
    "--n", default=4, show_default=True, type=click.IntRange(1, 256), help="Samples per problem."
)
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(0.0, 5.0))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--model",
    "model_path",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="A Hugging Face model folder (default: the embedded arith model).",
)
def demo(
    limit: int,
    difficulty: int | None,
    n: int,
    temperature: float,
    seed: int,
    model_path: str | None,
) -> None:
    """Sample solutions to arith problems and check them with the exact verifiers."""
    from ponder.apps.demo import run_demo
    from ponder.tasks.arith import DEFAULT_LEVEL, LEVELS

    level = DEFAULT_LEVEL if difficulty is None else difficulty
    if level not in LEVELS:
        raise click.BadParameter(
            f"unknown level {level}; known: {sorted(LEVELS)}", param_hint="--level"
        )
    start = time.perf_counter()
    summary = run_demo(
        limit=limit,
        level=level,
        n=n,
        temperature=temperature,
        seed=seed,
        model_path=model_path,
        echo=click.echo,
    )
    summary["wall_seconds"] = round(time.perf_counter() - start, 2)
    click.echo(json.dumps(summary))


def _parse_options(pairs: tuple[str, ...], flag: str = "--option") -> dict:
    """key=value pairs (values parsed as JSON when they parse, else kept as strings)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint=flag)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


@main.command(name="eval")
@click.option(
    "--task",
    default="arith",
    show_default=True,
    help="Registered task (see ponder.tasks.registry); arith is the embedded world.",
)
@click.option(
    "--task-option",
    "task_options",
    multiple=True,
    help="Task option key=value, repeatable (e.g. path=data.jsonl).",
)
@click.option(
    "--strategy",
    default="bon",
    show_default=True,
    help="Registered strategy: sample, bon, majority, weighted_majority, bom, beam, "
    "particle, particle_gibbs, astar, dvts.",
)
@click.option(
    "--n",
    default=8,
    show_default=True,
    type=click.IntRange(1, 4096),
    help="Width: samples, particles or beams.",
)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100000))
@click.option("--level", default=None, type=int, help="arith difficulty (default: the default).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(0.0, 5.0))
@click.option(
    "--verifier",
    "verifier_name",
    default=None,
    help="Verifier name (default: the task's process or outcome checker).",
)
@click.option(
    "--flip-rate",
    default=None,
    type=click.FloatRange(0.0, 1.0),
    help="For noisy verifiers: probability of flipping each score.",
)
@click.option("--option", "options", multiple=True, help="Strategy option key=value, repeatable.")
@click.option(
    "--concurrency",
    default=16,
    show_default=True,
    type=click.IntRange(1, 4096),
    help="Problems searched at once on the shared engine.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    required=True,
    help="JSONL of per-problem records; an existing file is resumed.",
)
@click.option("--model", "model_path", default=None, type=click.Path(exists=True, file_okay=False))
def eval_command(
    task,
    task_options,
    strategy,
    n,
    limit,
    level,
    seed,
    temperature,
    verifier_name,
    flip_rate,
    options,
    concurrency,
    out,
    model_path,
) -> None:
    """Run a search strategy over a task and report accuracy and compute."""
    from pathlib import Path

    from ponder.apps.evaluate import run_eval
    from ponder.engine.torch_backend.engine import Engine
    from ponder.strategies import PROCESS_STRATEGIES, STRATEGIES
    from ponder.tasks.registry import VERIFIERS, get_task

    if strategy not in STRATEGIES:
        raise click.BadParameter(
            f"unknown strategy {strategy!r}; known: {sorted(STRATEGIES)}", param_hint="--strategy"
        )
    task_kwargs = _parse_options(task_options, "--task-option")
    if level is not None:
        task_kwargs["level"] = level
    try:
        task_obj = get_task(task, **task_kwargs)
        verifier_name = verifier_name or task_obj.default_verifier(strategy in PROCESS_STRATEGIES)
        items = task_obj.items(limit, seed)
    except (ValueError, OSError) as exc:
        raise click.UsageError(str(exc)) from None
    if verifier_name not in VERIFIERS:
        raise click.BadParameter(
            f"unknown verifier {verifier_name!r}; known: {sorted(VERIFIERS)}",
            param_hint="--verifier",
        )
    verifier_options = {} if flip_rate is None else {"flip_rate": flip_rate, "seed": seed}
    from rich.progress import Progress

    with Engine.from_pretrained(model_path) as engine, Progress(transient=True) as bar:
        job = bar.add_task(f"{strategy} n={n}", total=len(items))
        try:
            records, summary = run_eval(
                engine,
                task_obj,
                items,
                strategy=strategy,
                n=n,
                verifier_name=verifier_name,
                verifier_options=verifier_options,
                strategy_options=_parse_options(options),
                temperature=temperature,
                seed=seed,
                out=Path(out),
                concurrency=concurrency,
                on_record=lambda r: bar.advance(job),
            )
        except (ValueError, TypeError) as exc:
            raise click.UsageError(str(exc)) from None
    summary = {
        "task": task,
        **task_kwargs,
        "strategy": strategy,
        "n": n,
        "verifier": verifier_name,
        **summary,
    }
    click.echo(f"\n{'metric':<28} value")
    for key, value in summary.items():
        click.echo(f"{key:<28} {value}")
    click.echo(json.dumps(summary))


@main.command()
@click.option("--task", default="arith", show_default=True, help="Registered task.")
@click.option("--task-option", "task_options", multiple=True, help="Task option key=value.")
@click.option(
    "--objective",
    default="passk",
    show_default=True,
    help="mean, passk, majk, bon_rl or bon_rl_v (ponder.align.OBJECTIVES).",
)
@click.option("--k", default=8, show_default=True, type=click.IntRange(1, 4096))
@click.option(
    "--n", default=16, show_default=True, type=click.IntRange(1, 4096), help="Samples per prompt."
)
@click.option("--limit", default=64, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--split", default=None, help="arith only: train (default) or heldout problems.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(0.0, 5.0))
@click.option(
    "--verifier", "verifier_name", default=None, help="Outcome verifier (default: task's)."
)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="JSONL; resumed.")
@click.option(
    "--dataset-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Also save a Hugging Face dataset here.",
)
@click.option("--model", "model_path", default=None, type=click.Path(exists=True, file_okay=False))
def signals(
    task,
    task_options,
    objective,
    k,
    n,
    limit,
    split,
    seed,
    temperature,
    verifier_name,
    out,
    dataset_dir,
    model_path,
) -> None:
    """Sample n completions per prompt, score them, and write per-sample advantages."""
    import asyncio
    from pathlib import Path

    from ponder.apps.signals import (
        check_objective,
        summarize_signals,
        to_dataset,
        write_signals,
    )
    from ponder.engine.torch_backend.engine import Engine
    from ponder.tasks.registry import get_task, make_verifier

    task_kwargs = _parse_options(task_options, "--task-option")
    try:
        check_objective(objective, k, n)
        if task == "arith":
            task_kwargs.setdefault("split", split or "train")
        elif split is not None:
            raise ValueError("--split applies to the arith task only")
        task_obj = get_task(task, **task_kwargs)
        verifier = make_verifier(verifier_name or task_obj.outcome_verifier)
        items = task_obj.items(limit, seed)
    except (ValueError, OSError) as exc:
        raise click.UsageError(str(exc)) from None
    start = time.perf_counter()
    with Engine.from_pretrained(model_path) as engine:
        try:
            records = asyncio.run(
                write_signals(
                    engine,
                    task_obj,
                    items,
                    objective=objective,
                    k=k,
                    n=n,
                    verifier=verifier,
                    seed=seed,
                    out=Path(out),
                    temperature=temperature,
                )
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    summary = {
        "task": task,
        "objective": objective,
        "k": k,
        **summarize_signals(records, n, time.perf_counter() - start),
    }
    if dataset_dir:
        try:
            to_dataset(records).save_to_disk(dataset_dir)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        summary["dataset_dir"] = dataset_dir
    click.echo(f"{'metric':<24} value")
    for key, value in summary.items():
        click.echo(f"{key:<24} {value}")
    click.echo(json.dumps(summary))


if __name__ == "__main__":
    main()
