"""Batched prompts in /v1/completions (`prompt` as a list of strings or of token-id lists, as
OpenAI and vLLM accept): one Job per prompt, run together, answered as one response.

Choices are indexed prompt-major (prompt i's choices after every choice of prompts before it; a
plain request with n choices gives prompt i the indices i*n ... i*n+n-1). `usage` sums every
prompt's; a search's `ponder` field lists every prompt's searches, each tagged `prompt_index`.
A single prompt never comes through here: its response is exactly as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

from ponder.apps.serve.errors import bad_request
from ponder.apps.serve.requests import Job
from ponder.apps.serve.runner import Choice, Outcome, run_job, stream_job, sum_stats


def per_prompt(body, max_n: int) -> list:
    """One completion body per prompt of a batched body; `[body]` for a single prompt (a string
    or one token-id list). 400 when prompts times n passes the server's max_n."""
    prompt = body.prompt
    if not isinstance(prompt, list) or isinstance(prompt[0], int):
        return [body]
    if len(prompt) * body.n > max_n:
        raise bad_request(
            f"{len(prompt)} prompts with n={body.n} ask for {len(prompt) * body.n} choices; "
            f"this server allows at most {max_n} per request",
            "prompt",
        )
    return [body.model_copy(update={"prompt": p}) for p in prompt]


def merge(outcomes: list[Outcome]) -> Outcome:
    """One Outcome for the whole batch: choices re-indexed prompt-major, stats summed."""
    choices: list[Choice] = []
    for outcome in outcomes:
        choices += [replace(c, index=len(choices) + k) for k, c in enumerate(outcome.choices)]
    details = None
    if outcomes[0].details is not None:
        searches = [
            {**search, "prompt_index": i}
            for i, o in enumerate(outcomes)
            for search in o.details["searches"]
        ]
        details = {**outcomes[0].details, "searches": searches}
    return Outcome(choices, sum_stats([o.stats for o in outcomes]), details)


async def run_jobs(engine, jobs: list[Job], request_id: str) -> Outcome:
    if len(jobs) == 1:
        return await run_job(engine, jobs[0], request_id)
    ids = [f"{request_id}-{i}" for i in range(len(jobs))]
    return merge(list(await asyncio.gather(*map(run_job, [engine] * len(jobs), jobs, ids))))


def stream_jobs(engine, jobs: list[Job], request_id: str, interval: float) -> AsyncIterator:
    if len(jobs) == 1:
        return stream_job(engine, jobs[0], request_id, interval)
    return _stream_batch(engine, jobs, request_id, interval)


async def _pump(engine, job: Job, i: int, request_id: str, interval: float, queue) -> None:
    async with contextlib.aclosing(stream_job(engine, job, request_id, interval)) as items:
        async for item in items:
            await queue.put((i, item))


async def _stream_batch(engine, jobs: list[Job], request_id: str, interval: float):
    """Every prompt's stream at once. Plain deltas go out as they come (prompt i's choice j as
    index i*n+j); a search's choices, which come at its end anyway, are held until every prompt
    is done so they can be numbered prompt-major; progress dicts carry `prompt_index`."""
    queue: asyncio.Queue = asyncio.Queue()
    tasks = [
        asyncio.ensure_future(_pump(engine, job, i, f"{request_id}-{i}", interval, queue))
        for i, job in enumerate(jobs)
    ]
    done = asyncio.ensure_future(asyncio.gather(*tasks))
    outcomes: dict[int, Outcome] = {}
    held: dict[int, list[Choice]] = {}
    try:
        while not (done.done() and queue.empty()):
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                continue
            i, item = getter.result()
            if isinstance(item, dict):
                yield {**item, "prompt_index": i}
            elif isinstance(item, Outcome):
                outcomes[i] = item
            elif jobs[i].strategy is None:
                yield replace(item, index=i * jobs[i].params.n + item.index)
            else:
                held.setdefault(i, []).append(item)
        done.result()  # raises the first prompt's error, if any
        merged = merge([replace(outcomes[i], choices=held.get(i, [])) for i in range(len(jobs))])
        if jobs[0].strategy is not None:
            for choice in merged.choices:
                yield choice
        yield merged
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
