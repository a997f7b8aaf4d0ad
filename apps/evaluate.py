"""Offline batch evaluation: run a strategy over a task's problems on one engine.

Many problems run concurrently (each is one search on the shared engine, so their forward passes
batch together). Each finished problem is appended to the output JSONL at once and flushed, so
a killed run loses nothing finished; rerunning with the same output file skips the problems
already recorded (matched by id) and the summary covers all of them. The summary reports
accuracy, pass@k when the strategy returns k answers, mean generated tokens, verifier calls and
wall time.
"""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from ponder.engine.sampling_params import SamplingParams
from ponder.strategies import SearchRequest, get_strategy
from ponder.tasks.base import Item, Task
from ponder.tasks.registry import make_verifier


def prompt_for(engine, task: Task, item: Item):
    """A chat task's prompt goes through the model's chat template when it has one (token ids);
    otherwise, and for completion tasks like arith, the raw text is continued."""
    if task.chat and engine.has_chat_template:
        return engine.chat_prompt(item.prompt)
    return item.prompt


def read_done(out: Path) -> dict[str, dict]:
    """Records already in the output file; a torn last line (a kill mid-write) is dropped."""
    done: dict[str, dict] = {}
    if not out.exists():
        return done
    for line in out.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[record["id"]] = record
    return done


async def evaluate(
    engine,
    task: Task,
    items: list[Item],
    *,
    strategy: str,
    n: int,
    verifier_name: str,
    verifier_options: dict,
    strategy_options: dict,
    temperature: float,
    seed: int,
    out: Path,
    concurrency: int,
    on_record: Callable[[dict], None] = lambda r: None,
) -> list[dict]:
    run = get_strategy(strategy)
    if task.chat and not engine.has_chat_template:
        warnings.warn(
            f"task {task.name!r} is written for chat models but {engine.model_path} has no chat "
            "template: prompting with the raw text",
            stacklevel=2,
        )
    verifier = make_verifier(verifier_name, **verifier_options)
    done = read_done(out)
    todo = [(i, it) for i, it in enumerate(items) if it.id not in done]
    gate = asyncio.Semaphore(concurrency)
    params = SamplingParams(temperature=temperature)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as sink:
        # A torn last line from a killed run would glue onto the next record: start a new line.
        if out.stat().st_size and not out.read_bytes().endswith(b"\n"):
            sink.write("\n")

        async def solve(index: int, item: Item) -> None:
            async with gate:
                request = SearchRequest(
                    prompt=prompt_for(engine, task, item),
                    verifier=verifier,
                    n=n,
                    step_delimiter=task.step_delimiter,
                    max_steps=task.max_steps,
                    max_step_tokens=task.max_step_tokens,
                    extract_answer=task.extract_answer,
                    reference=item.reference,
                )
                # Verifiers see the task's prompt, not the chat-templated text.
                context = engine.search(params, seed=seed * 1_000_003 + index, question=item.prompt)
                async with context as ctx:
                    result = await run(ctx, request, **strategy_options)
                record = {
                    "id": item.id,
                    "strategy": strategy,
                    "n": n,
                    "verifier": verifier.name,
                    "truth": item.answer,
                    "predicted": result.answer,
                    "answers": result.answers,
                    "correct": task.is_correct(item, result.answer),
                    "any_correct": any(task.is_correct(item, a) for a in result.answers),
                    **result.stats,
                }
                sink.write(json.dumps(record) + "\n")
                sink.flush()
                done[item.id] = record
                on_record(record)

        await asyncio.gather(*(solve(i, it) for i, it in todo))
    return [done[it.id] for it in items if it.id in done]


def summarize(records: list[dict], wall_seconds: float) -> dict:
    count = len(records)
    mean = (
        (lambda key: round(sum(r[key] for r in records) / count, 2)) if count else (lambda key: 0.0)
    )
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


def run_eval(engine, task: Task, items: list[Item], **kwargs) -> tuple[list[dict], dict]:
    start = time.perf_counter()
    records = asyncio.run(evaluate(engine, task, items, **kwargs))
    return records, summarize(records, time.perf_counter() - start)
