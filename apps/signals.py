"""Training signals from sampling: n completions per prompt, verifier rewards, objective advantages.

    records = await write_signals(engine, task, items, objective="passk", k=8, n=16, ...)

For each item, n completions are sampled in one request (they share the prompt's KV blocks; the
request's seed is derived from (seed, item index), so a record does not depend on which other
prompts ran beside it), scored by an outcome verifier (reward = its score), and turned into
per-sample advantages by `group_advantages(objective, ...)` (align/__init__.py: mean, passk,
majk, bon_rl, bon_rl_v). Each sample becomes one JSONL record:

    id, prompt_id, prompt, prompt_token_ids, completion, completion_token_ids, logprob (sum of
    the sampled tokens' logprobs under the sampling distribution), finish_reason, answer, reward,
    advantage, objective, k, n, seed, verifier

A prompt's n records are written with one write and flushed, so a killed run leaves whole
prompts plus at most one torn group; a rerun drops the torn group (rewriting the file without
it) and skips every complete prompt. `to_dataset` turns the records into a Hugging Face
`datasets.Dataset` (optional dependency). Only the public Engine API is used; this module never
touches the scheduler or the KV cache.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from ponder.align import OBJECTIVES, group_advantages
from ponder.apps.evaluate import prompt_for
from ponder.engine.sampling_params import SamplingParams
from ponder.tasks.base import Item, Task


def read_complete(out: Path, n: int) -> dict[str, list[dict]]:
    """Complete prompt groups already in `out`; torn lines and partial groups are dropped from
    the file itself, so appending afterwards cannot duplicate a sample."""
    groups: dict[str, list[dict]] = {}
    if not out.exists():
        return groups
    for line in out.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        groups.setdefault(record["prompt_id"], []).append(record)
    complete = {pid: rs for pid, rs in groups.items() if len(rs) == n}
    if len(complete) != len(groups) or out.read_bytes().count(b"\n") != n * len(complete):
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for rs in complete.values() for r in rs))
        tmp.replace(out)
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
    *,
    objective: str,
    k: int,
    n: int,
    verifier,
    seed: int,
    out: Path,
    temperature: float = 1.0,
    max_tokens: int | None = None,
    concurrency: int = 16,
    on_prompt: Callable[[list[dict]], None] = lambda records: None,
) -> list[dict]:
    check_objective(objective, k, n)
    if verifier.process:
        raise ValueError(f"signals need an outcome verifier; {verifier.name!r} scores steps")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = read_complete(out, n)
    gate = asyncio.Semaphore(concurrency)
    max_tokens = max_tokens or task.max_steps * task.max_step_tokens

    async def one(index: int, item: Item, sink) -> None:
        async with gate:
            params = SamplingParams(
                n=n,
                temperature=temperature,
                max_tokens=max_tokens,
                seed=seed * 1_000_003 + index,
                logprobs=0,
            )
            result = await engine.agenerate(prompt_for(engine, task, item), params)
        texts = [c.text for c in result.outputs]
        references = None if item.reference is None else [item.reference] * n
        scores = await asyncio.to_thread(verifier.score, [item.prompt] * n, texts, references)
        rewards = [s[0] for s in scores]
        answers = [task.extract_answer(t) for t in texts]
        advantages = group_advantages(objective, rewards, k=k, answers=answers, scores=rewards)
        records = [
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
                "objective": objective,
                "k": k,
                "n": n,
                "seed": seed,
                "verifier": verifier.name,
            }
            for j, c in enumerate(result.outputs)
        ]
        sink.write("".join(json.dumps(r) + "\n" for r in records))
        sink.flush()
        done[item.id] = records
        on_prompt(records)

    with out.open("a") as sink:
        todo = [(i, it) for i, it in enumerate(items) if it.id not in done]
        await asyncio.gather(*(one(i, it, sink) for i, it in todo))
    return [r for it in items if it.id in done for r in done[it.id]]


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
