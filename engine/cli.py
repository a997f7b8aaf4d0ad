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
    from ponder.engine.demo import run_demo
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


if __name__ == "__main__":
    main()
