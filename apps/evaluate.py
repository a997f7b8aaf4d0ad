"""Offline batch evaluation: run a strategy over a task's problems on one backend.

    records, summary = run_eval(engine, task, items, EvalSettings(strategy="particle", n=8, ...))

Every problem is one search through the one-call API (`ponder.strategies.run`), seeded with
problem_seed(seed, index) like the benchmarks, so a benchmark cell reproduces here. Many problems
run concurrently on the shared engine, so their forward passes batch together. Each finished
problem is appended to the run file at once (apps/run_file.py: a header records the settings;
a resume with other settings is refused), so a killed run loses nothing finished, and a rerun
skips the problems already recorded. The summary reports accuracy, pass@k when the strategy
returns k answers, mean generated tokens, verifier calls and wall time.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ponder.apps.run_file import RunFile
from ponder.strategies import SearchRequest, problem_seed, run
from ponder.tasks.base import Item, Task


@dataclass(frozen=True)
class EvalSettings:
    """What produced a run: recorded in the run file's header and checked on resume."""

    strategy: str
    n: int
    verifier: str
    verifier_options: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)  # the strategy's
    temperature: float = 1.0
    seed: int = 0
    task: str = "arith"
    task_options: dict = field(default_factory=dict)
    model: str = "embedded"
    constrain_answer: bool = False  # sample under task.answer_constraint() (--constrain-answer)


def prompt_for(engine, task: Task, item: Item):
    """A chat task's prompt goes through the model's chat template when it has one (token ids);
    otherwise, and for completion tasks like arith, the raw text is continued."""
    if task.chat and engine.has_chat_template:
        return engine.chat_prompt(item.prompt)
    return item.prompt


def request_for(engine, task: Task, item: Item, index: int, settings: EvalSettings, verifier):
    return SearchRequest(
        prompt=prompt_for(engine, task, item),
        verifier=verifier,
        n=settings.n,
        seed=problem_seed(settings.seed, index),
        temperature=settings.temperature,
        step_delimiter=task.step_delimiter,
        max_steps=task.max_steps,
        max_step_tokens=task.max_step_tokens,
        extract_answer=task.extract_answer,
        reference=item.reference,
        question=item.prompt,  # verifiers see the task's prompt, not the chat-templated text
        structured_outputs=task.answer_constraint() if settings.constrain_answer else None,
    )


def record_of(task: Task, item: Item, settings: EvalSettings, verifier, result) -> dict:
    return {
        "id": item.id,
        "strategy": settings.strategy,
        "n": settings.n,
        "verifier": verifier.name,
        "truth": item.answer,
        "predicted": result.answer,
        "answers": result.answers,
        "correct": task.is_correct(item, result.answer),
        "any_correct": any(task.is_correct(item, a) for a in result.answers),
        **result.stats,
    }


async def evaluate(
    engine,
    task: Task,
    items: list[Item],
    settings: EvalSettings,
    verifier,
    out: Path,
    *,
    concurrency: int = 16,
    restart: bool = False,
    on_record: Callable[[dict], None] = lambda r: None,
) -> list[dict]:
    if task.chat and not engine.has_chat_template:
        warnings.warn(
            f"task {task.name!r} is written for chat models but {engine.model_path} has no chat "
            "template: prompting with the raw text",
            stacklevel=2,
        )
    run_file = RunFile.open(out, asdict(settings), restart=restart)
    done = {r["id"]: r for r in run_file.records}
    gate = asyncio.Semaphore(concurrency)

    async def solve(index: int, item: Item) -> None:
        async with gate:
            request = request_for(engine, task, item, index, settings, verifier)
            result = await run(engine, settings.strategy, request, **settings.options)
        record = record_of(task, item, settings, verifier, result)
        run_file.append([record])
        done[item.id] = record
        on_record(record)

    await asyncio.gather(*(solve(i, it) for i, it in enumerate(items) if it.id not in done))
    return [done[it.id] for it in items if it.id in done]


def summarize(records: list[dict], wall_seconds: float) -> dict:
    count = len(records)

    def mean(key: str) -> float:
        return round(sum(r[key] for r in records) / count, 2) if count else 0.0

    k = max((len(r["answers"]) for r in records), default=1)
    summary = {
        "problems": count,
        "accuracy": round(sum(r["correct"] for r in records) / count, 4) if count else 0.0,
        "mean_generated_tokens": mean("generated_tokens"),
        "mean_verifier_calls": mean("verifier_calls"),
        "mean_computed_prompt_tokens": mean("computed_prompt_tokens"),
        "wall_seconds": round(wall_seconds, 2),
    }
    if k > 1:
        summary[f"pass@{k}"] = round(sum(r["any_correct"] for r in records) / count, 4)
    return summary


def run_eval(engine, task: Task, items: list[Item], settings, verifier, out, **kwargs):
    """(records, summary) of one evaluation, synchronously."""
    start = time.perf_counter()
    records = asyncio.run(evaluate(engine, task, items, settings, verifier, Path(out), **kwargs))
    return records, summarize(records, time.perf_counter() - start)
