"""The `ponder` command line: one console script, one subcommand per job.

Each subcommand parses its flags, validates everything it can before a model loads (strategy,
task and verifier names and options, the run file), then calls one library function. A caller's
mistake ends in a one-line usage error; an error while running (e.g. a prompt longer than the
model takes) is a one-line error; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import json
import time
from importlib.metadata import version

import click
from ponder.apps.cli_options import (
    BACKENDS,
    collect_options,
    load_backend,
    load_engine,
    model_label,
    parse_pairs,
)

MODEL_HELP = "A Hugging Face model folder (default: the embedded arith model)."


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
    help="Number of held-out arith problems.",
)
@click.option(
    "--level",
    "difficulty",
    default=None,
    type=int,
    help="Arith difficulty level (default: the task's default level).",
)
@click.option(
    "--n", default=4, show_default=True, type=click.IntRange(1, 256), help="Samples per problem."
)
@click.option(
    "--temperature",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.0, 5.0),
    help="Sampling temperature (0: greedy).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds problems and samples.")
@click.option(
    "--model",
    "model_path",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help=MODEL_HELP,
)
def demo(limit, difficulty, n, temperature, seed, model_path) -> None:  # fmt: skip
    """Sample solutions to arith problems and check them with the exact verifiers."""
    from ponder.apps.demo import run_demo
    from ponder.tasks.arith import DEFAULT_LEVEL, LEVELS

    level = DEFAULT_LEVEL if difficulty is None else difficulty
    if level not in LEVELS:
        raise click.BadParameter(
            f"unknown level {level}; known: {sorted(LEVELS)}", param_hint="--level"
        )
    start = time.perf_counter()
    with load_engine(model_path) as engine:
        summary = run_demo(engine, limit=limit, level=level, n=n, temperature=temperature,
                           seed=seed, echo=click.echo)  # fmt: skip
    summary["wall_seconds"] = round(time.perf_counter() - start, 2)
    click.echo(json.dumps(summary))


def task_flags(fn):
    """--task, --task-option, --level, --limit, --seed, --model and --config, shared by eval
    and signals."""
    flags = [
        click.option("--task", default="arith", show_default=True,
                     help="Registered task (ponder.tasks.registry); arith is the embedded world."),
        click.option("--task-option", "task_pairs", multiple=True,
                     help="Task option key=value, repeatable (e.g. path=data.jsonl)."),
        click.option("--level", default=None, type=int,
                     help="Arith difficulty level (shorthand for --task-option level=N)."),
        click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10**6),
                     help="Number of problems (the task's first ones for the seed)."),
        click.option("--seed", default=0, show_default=True, type=int,
                     help="Seeds the problems, every search and the noisy verifiers."),
        click.option("--temperature", default=1.0, show_default=True,
                     type=click.FloatRange(0.0, 5.0), help="Sampling temperature (0: greedy)."),
        click.option("--model", "model_path", default=None,
                     type=click.Path(exists=True, file_okay=False), help=MODEL_HELP),
        click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
                     help="JSON file with options / task_options / verifier_options objects."),
        click.option("--restart", is_flag=True,
                     help="Start the --out run file anew instead of resuming it."),
        click.option("--backend", default="torch", show_default=True,
                     type=click.Choice(BACKENDS), help="Engine to search on (README, Backends)."),
        click.option("--url", default=None, help="Server URL for --backend remote."),
        click.option("--api-key", default=None, envvar="PONDER_API_KEY",
                     help="Bearer token for --backend remote (or $PONDER_API_KEY)."),
    ]  # fmt: skip
    for flag in reversed(flags):
        fn = flag(fn)
    return fn


@main.command(name="eval")
@task_flags
@click.option(
    "--strategy",
    default="bon",
    show_default=True,
    help="Registered strategy (ponder.strategies.STRATEGIES).",
)
@click.option(
    "--n",
    default=8,
    show_default=True,
    type=click.IntRange(1, 4096),
    help="Width: samples, particles or beams.",
)
@click.option(
    "--option",
    "option_pairs",
    multiple=True,
    help="Strategy option key=value, repeatable (e.g. tau=0.5).",
)
@click.option(
    "--verifier",
    "verifier_name",
    default=None,
    help="Verifier name (default: the task's process or outcome checker).",
)
@click.option(
    "--verifier-option",
    "verifier_pairs",
    multiple=True,
    help="Verifier option key=value, repeatable (e.g. flip_rate=0.1, path=models/orm).",
)
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
    help="Run file (JSONL, one record per problem); resumed when it exists.",
)
@click.option(
    "--constrain-answer",
    is_flag=True,
    help="Constrain sampling so the answer line always parses (the task's answer format).",
)
@click.option(
    "--shards",
    default=None,
    type=click.IntRange(1, 4096),
    help="Spread the problems over N Ray actors, one backend each (extra: ray); "
    "with --backend remote, --url may list one server per actor, comma-separated.",
)
@click.option(
    "--ray-address",
    default=None,
    help="Ray cluster to join ('auto': the one `ray start` made); default: a local one.",
)
def eval_command(task, task_pairs, level, limit, seed, temperature, model_path, config_path,
                 restart, backend, url, api_key, strategy, n, option_pairs, verifier_name,
                 verifier_pairs, concurrency, out, constrain_answer, shards,
                 ray_address) -> None:  # fmt: skip
    """Run a search strategy over a task and report accuracy and compute."""
    from ponder.apps.evaluate import EvalSettings, run_eval
    from ponder.apps.setup import check_run_file, prepare_eval
    from rich.progress import Progress

    groups = collect_options(config_path, task_pairs, level, verifier_pairs, option_pairs)
    setup = prepare_eval(
        task=task, strategy=strategy, verifier_name=verifier_name, **groups,
        n=n, seed=seed, temperature=temperature, limit=limit, constrain_answer=constrain_answer,
    )  # fmt: skip
    settings = EvalSettings(**setup.settings, model=model_label(model_path))
    check_run_file(out, settings, restart)
    if shards is not None or ray_address is not None:
        from ponder.apps.shard import run_sharded_command

        summary = run_sharded_command(settings, setup.items, out, shards=shards or 1,
                                      address=ray_address, backend=backend, model_path=model_path,
                                      url=url, api_key=api_key, concurrency=concurrency,
                                      restart=restart)  # fmt: skip
    else:
        engine = load_backend(backend, model_path, url, api_key)
        with engine, Progress(transient=True) as bar:
            job = bar.add_task(f"{strategy} n={n}", total=len(setup.items))
            try:
                _, summary = run_eval(engine, setup.task, setup.items, settings, setup.verifier,
                                      out, concurrency=concurrency, restart=restart,
                                      on_record=lambda r: bar.advance(job))  # fmt: skip
            except ValueError as exc:
                raise click.ClickException(str(exc)) from None
    echo_summary({"task": task, **settings.task_options, "strategy": strategy, "n": n,
                  "verifier": setup.verifier.name, **summary})  # fmt: skip


@main.command()
@task_flags
@click.option(
    "--objective",
    default="passk",
    show_default=True,
    help="mean, passk, majk, bon_rl or bon_rl_v (ponder.align.OBJECTIVES).",
)
@click.option(
    "--k",
    default=8,
    show_default=True,
    type=click.IntRange(1, 4096),
    help="The k of pass@k / maj@k / BoN-k the advantages target.",
)
@click.option(
    "--n", default=16, show_default=True, type=click.IntRange(1, 4096), help="Samples per prompt."
)
@click.option(
    "--verifier", "verifier_name", default=None, help="Outcome verifier (default: the task's)."
)
@click.option(
    "--verifier-option",
    "verifier_pairs",
    multiple=True,
    help="Verifier option key=value, repeatable.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    required=True,
    help="Run file (JSONL, one record per sample); resumed when it exists.",
)
@click.option(
    "--dataset-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Also save a Hugging Face dataset here.",
)
def signals(task, task_pairs, level, limit, seed, temperature, model_path, config_path, restart,
            backend, url, api_key, objective, k, n, verifier_name, verifier_pairs, out,
            dataset_dir) -> None:  # fmt: skip
    """Sample n completions per prompt, score them, and write per-sample advantages."""
    from ponder.apps.setup import prepare_signals
    from ponder.apps.signals import SignalSettings, run_signals, to_dataset

    groups = collect_options(config_path, task_pairs, level, verifier_pairs)
    setup = prepare_signals(
        task=task, verifier_name=verifier_name, task_options=groups["task_options"],
        verifier_options=groups["verifier_options"],
        objective=objective, k=k, n=n, seed=seed, limit=limit,
    )  # fmt: skip
    settings = SignalSettings(**setup.settings, temperature=temperature,
                              model=model_label(model_path))  # fmt: skip
    with load_backend(backend, model_path, url, api_key) as engine:
        try:
            records, summary = run_signals(engine, setup.task, setup.items, settings,
                                           setup.verifier, out, restart=restart)  # fmt: skip
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    summary = {"task": task, "objective": objective, "k": k, **summary}
    if dataset_dir:
        to_dataset(records).save_to_disk(dataset_dir)
        summary["dataset_dir"] = dataset_dir
    echo_summary(summary)


def echo_summary(summary: dict) -> None:
    width = max(len(key) for key in summary) + 2
    click.echo(f"\n{'metric':<{width}} value")
    for key, value in summary.items():
        click.echo(f"{key:<{width}} {value}")
    click.echo(json.dumps(summary))


@main.command()
@click.option(
    "--model",
    "model_path",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help=MODEL_HELP,
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--api-key",
    envvar="PONDER_API_KEY",
    default=None,
    help="Bearer token every route but /health requires (env PONDER_API_KEY).",
)
@click.option(
    "--served-name",
    default=None,
    help="Model id clients send (default: ponder-embedded or the folder's name).",
)
@click.option(
    "--verifier",
    "verifiers",
    multiple=True,
    help="A verifier requests may name (repeatable; the first is the default). "
    "Default for the embedded model: arith_step and arith_outcome.",
)
@click.option(
    "--verifier-option",
    "verifier_pairs",
    multiple=True,
    help="key=value for the only verifier, or <verifier>.key=value.",
)
@click.option(
    "--answer-format",
    default=None,
    type=click.Choice(["arith", "text"]),
    help="How answers are read for voting (default: arith for the embedded model).",
)
@click.option("--max-n", default=64, show_default=True, type=click.IntRange(1))
@click.option("--max-width", default=256, show_default=True, type=click.IntRange(1))
@click.option("--max-tokens", default=1024, show_default=True, type=click.IntRange(1))
@click.option("--max-budget-tokens", default=1_000_000, show_default=True, type=click.IntRange(1))
@click.option("--max-concurrent", default=64, show_default=True, type=click.IntRange(1))
@click.option("--max-queue", default=256, show_default=True, type=click.IntRange(1))
@click.option("--queue-timeout", default=30.0, show_default=True, type=click.FloatRange(0.01))
@click.option("--max-body-bytes", default=1_000_000, show_default=True, type=click.IntRange(1))
def serve(model_path, host, port, api_key, served_name, verifiers, verifier_pairs, answer_format,
          max_n, max_width, max_tokens, max_budget_tokens, max_concurrent, max_queue,
          queue_timeout, max_body_bytes) -> None:  # fmt: skip
    """An OpenAI-compatible server; a `ponder` body field (or model name) turns on search."""
    from pathlib import Path

    from ponder.apps.serve import create_app
    from ponder.apps.serve.server import build_config, run_server
    from ponder.apps.setup import usage

    embedded = model_path is None
    config = usage(
        build_config,
        model_label=served_name or ("ponder-embedded" if embedded else Path(model_path).name),
        verifiers=list(verifiers or (["arith_step", "arith_outcome"] if embedded else [])),
        verifier_options=parse_pairs(verifier_pairs, "--verifier-option"),
        api_key=api_key, answer_format=answer_format or ("arith" if embedded else "text"),
        limits=dict(max_n=max_n, max_width=max_width, max_tokens=max_tokens,
                    max_budget_tokens=max_budget_tokens, max_concurrent=max_concurrent,
                    max_queue=max_queue, queue_timeout_s=queue_timeout,
                    max_body_bytes=max_body_bytes),
    )  # fmt: skip
    with load_engine(model_path) as engine:
        run_server(create_app(engine, config), host, port)


if __name__ == "__main__":
    main()
