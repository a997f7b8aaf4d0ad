"""Training signals from sampling: n completions per prompt, verifier rewards, objective advantages.

    records = await write_signals(engine, task, items, SignalSettings("passk", k=8, n=16, ...),
                                  verifier, out)

For each item, n completions are sampled in one request (they share the prompt's KV blocks; the
request's seed is derived from (seed, item index), so a record does not depend on which other
prompts ran beside it), scored by an outcome verifier (reward = its score), and turned into
per-sample advantages by `group_advantages(objective, ...)` (align/__init__.py: mean, passk,
majk, bon_rl, bon_rl_v). Each sample becomes one JSONL record:

    id, prompt_id, prompt, prompt_token_ids, completion, completion_token_ids, logprob (sum of
    the sampled tokens' logprobs under the sampling distribution), finish_reason, answer, reward,
    advantage, objective, k, n, seed, verifier

The run file (apps/run_file.py) starts with a header recording the settings; a resume with
other settings is refused. A prompt's n records are written with one write and flushed, so a
killed run leaves whole prompts plus at most one torn group; a rerun drops the torn group
(rewriting the file without it) and skips every complete prompt. `to_dataset` turns the
records into a Hugging Face `datasets.Dataset` (optional dependency). Only the public Engine
API is used; this module never touches the scheduler or the KV cache.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ponder.align import OBJECTIVES, group_advantages
from ponder.apps.evaluate import prompt_for
from ponder.apps.run_file import RunFile
from ponder.engine.sampling_params import SamplingParams
from ponder.strategies import problem_seed
from ponder.tasks.base import Item, Task


@dataclass(frozen=True)
class SignalSettings:
    """What produced a signals run: recorded in the run file's header, checked on resume."""

    objective: str
    k: int
    n: int
    verifier: str
    verifier_options: dict = field(default_factory=dict)
    temperature: float = 1.0
    seed: int = 0
    task: str = "arith"
    task_options: dict = field(default_factory=dict)
    model: str = "embedded"


def complete_groups(run: RunFile, n: int) -> dict[str, list[dict]]:
    """The run's complete prompt groups; a torn group (a kill mid-run) is dropped from the file
    itself, so appending afterwards cannot duplicate a sample."""
    groups: dict[str, list[dict]] = {}
    for record in run.records:
        groups.setdefault(record["prompt_id"], []).append(record)
    complete = {pid: rs for pid, rs in groups.items() if len(rs) == n}
    if len(complete) != len(groups):
        run.rewrite([r for rs in complete.values() for r in rs])
    return complete


def check_objective(objective: str, k: int, n: int) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; known: {sorted(OBJECTIVES)}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if objective in ("majk", "bon_rl", "bon_rl_v") and k != n:
        raise ValueError(f"{objective} is defined on groups of exactly k samples: set --n {k}")


async def write_signals(
    engine,
    task: Task,
    items: list[Item],
    settings: SignalSettings,
    verifier,
    out: Path,
    *,
    max_tokens: int | None = None,
    concurrency: int = 16,
    restart: bool = False,
    on_prompt: Callable[[list[dict]], None] = lambda records: None,
) -> list[dict]:
    check_objective(settings.objective, settings.k, settings.n)
    if verifier.process:
        raise ValueError(f"signals need an outcome verifier; {verifier.name!r} scores steps")
    run = RunFile.open(out, asdict(settings), restart=restart)
    done = complete_groups(run, settings.n)
    gate = asyncio.Semaphore(concurrency)
    max_tokens = max_tokens or task.max_steps * task.max_step_tokens

    async def one(index: int, item: Item) -> None:
        params = SamplingParams(
            n=settings.n,
            temperature=settings.temperature,
            max_tokens=max_tokens,
            seed=problem_seed(settings.seed, index),
            logprobs=0,
        )
        async with gate:
            result = await engine.agenerate(prompt_for(engine, task, item), params)
        records = await group_records(task, item, result, settings, verifier)
        run.append(records)
        done[item.id] = records
        on_prompt(records)

    await asyncio.gather(*(one(i, it) for i, it in enumerate(items) if it.id not in done))
    return [r for it in items if it.id in done for r in done[it.id]]


async def group_records(task: Task, item: Item, result, settings: SignalSettings, verifier):
    """One record per sample of a prompt: reward from the verifier, the objective's advantage."""
    n = settings.n
    texts = [c.text for c in result.outputs]
    references = None if item.reference is None else [item.reference] * n
    scores = await asyncio.to_thread(verifier.score, [item.prompt] * n, texts, references)
    rewards = [s[0] for s in scores]
    answers = [task.extract_answer(t) for t in texts]
    advantages = group_advantages(
        settings.objective, rewards, k=settings.k, answers=answers, scores=rewards
    )
    return [
        {
            "id": f"{item.id}#{j}",
            "prompt_id": item.id,
            "prompt": item.prompt,
            "prompt_token_ids": list(result.prompt_token_ids),
            "completion": c.text,
            "completion_token_ids": list(c.token_ids),
            "logprob": c.cumulative_logprob,
            "finish_reason": c.finish_reason,
            "answer": answers[j],
            "reward": rewards[j],
            "advantage": float(advantages[j]),
            "objective": settings.objective,
            "k": settings.k,
            "n": n,
            "seed": settings.seed,
            "verifier": verifier.name,
        }
        for j, c in enumerate(result.outputs)
    ]


def run_signals(engine, task, items, settings, verifier, out, **kwargs):
    """(records, summary) of one signals run, synchronously."""
    start = time.perf_counter()
    job = write_signals(engine, task, items, settings, verifier, Path(out), **kwargs)
    records = asyncio.run(job)
    return records, summarize_signals(records, settings.n, time.perf_counter() - start)


def summarize_signals(records: list[dict], n: int, wall_seconds: float) -> dict:
    groups: dict[str, list[float]] = {}
    for r in records:
        groups.setdefault(r["prompt_id"], []).append(r["reward"])
    flat = [r["reward"] for r in records]
    return {
        "prompts": len(groups),
        "samples": len(records),
        "n": n,
        "mean_reward": round(sum(flat) / len(flat), 4) if flat else 0.0,
        # Groups whose rewards are all equal give every objective zero advantage: no signal.
        "zero_signal_prompts": round(
            sum(len(set(g)) == 1 for g in groups.values()) / len(groups), 4
        )
        if groups
        else 0.0,
        "mean_completion_tokens": round(
            sum(len(r["completion_token_ids"]) for r in records) / len(records), 1
        )
        if records
        else 0.0,
        "wall_seconds": round(wall_seconds, 2),
    }


def to_dataset(records: list[dict]):
    """The records as a Hugging Face `datasets.Dataset` (one row per sample)."""
    try:
        import datasets
    except ImportError:
        raise ValueError(
            "exporting a dataset needs the `datasets` package: pip install 'ponder[align]'"
        ) from None
    return datasets.Dataset.from_list(records)
