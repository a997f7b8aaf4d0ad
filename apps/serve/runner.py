"""Run a Job on the engine and return what a response needs: choices, usage, search details.

    outcome = await run_job(engine, job, request_id, on_context=contexts.append)

Plain jobs call `engine.agenerate`; search jobs call `ponder.strategies.run` once per choice
group, all awaited together so they share the engine's batching. Streamed plain jobs iterate
`engine.stream` (text deltas as tokens are sampled); streamed searches report the live contexts'
`progress()` while they run. Cancelling the awaiting task (or closing a stream) cancels the
work, and the engine frees exactly the blocks it held.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from ponder.apps.serve.requests import Job
from ponder.strategies import SearchResult, run

STAT_KEYS = (
    "prompt_tokens", "cached_prompt_tokens", "computed_prompt_tokens", "generated_tokens",
    "samples", "extend_calls", "verifier_calls",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Choice:
    index: int
    text: str  # the whole text, or in a stream the new text since the last delta
    finish_reason: str | None  # None: a stream delta of a completion still running
    token_ids: tuple[int, ...] = ()
    logprobs: list[dict] | None = None  # per token: {token id: Logprob}, the chosen one included
    stop_reason: int | str | None = None  # the stop string or token id; None for EOS or length


@dataclass
class Outcome:
    choices: list[Choice]
    stats: dict  # summed SearchStats of every context the job opened
    details: dict | None = None  # the search's `ponder` response field; None for plain jobs
    extra: dict = field(default_factory=dict)

    @property
    def usage(self) -> dict:
        prompt = self.stats.get("prompt_tokens", 0)
        completion = self.stats.get("generated_tokens", 0)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": self.stats.get("cached_prompt_tokens", 0)},
            "ponder": {k: self.stats.get(k, 0) for k in STAT_KEYS},
        }


def sum_stats(stats: list[dict]) -> dict:
    return {k: sum(s.get(k, 0) for s in stats) for k in STAT_KEYS}


async def run_plain(engine, job: Job, request_id: str) -> Outcome:
    out = await engine.agenerate(job.prompt_ids, job.params, request_id=request_id)
    choices = [
        Choice(o.index, o.text, o.finish_reason, tuple(o.token_ids), o.logprobs, o.stop_reason)
        for o in out.outputs
    ]
    return Outcome(choices, sum_stats([out.metrics]))


async def stream_plain(engine, job: Job, request_id: str) -> AsyncIterator[Choice | Outcome]:
    """Deltas of a plain job as the engine samples them (a Choice per completion that advanced,
    carrying its new text; `finish_reason` on its last), then the Outcome.

    Closing this iterator closes the engine's stream, which aborts the request and frees its
    blocks. A request for logprobs streams each completion whole when it is done: the engine's
    stream deltas carry no logprobs (so does a backend without `stream`)."""
    if job.params.logprobs is not None or not hasattr(engine, "stream"):
        outcome = await run_plain(engine, job, request_id)
        for choice in outcome.choices:
            yield choice
        yield outcome
        return
    stream = engine.stream(job.prompt_ids, job.params, request_id=request_id)
    async with contextlib.aclosing(stream) as outputs:
        async for out in outputs:
            for o in out.outputs:
                if o.text or o.finish_reason is not None:
                    yield Choice(o.index, o.text, o.finish_reason, tuple(o.token_ids))
            if out.finished:
                yield Outcome([], sum_stats([out.metrics]))


def _choices(result: SearchResult, start: int) -> list[Choice]:
    """One choice per chosen answer: the best-scoring candidate with that answer."""
    choices = []
    for answer in result.answers or [result.answer]:
        same = [c for c in result.candidates if c.answer == answer] or result.candidates
        best = max(same, key=lambda c: c.score if c.score is not None else 0.0, default=None)
        text = best.text if best else ""
        reason = "stop" if best is None or best.finished else "length"
        choices.append(Choice(start + len(choices), text, reason))
    return choices


def _details(job: Job, results: list[SearchResult]) -> dict:
    searches = []
    for r in results:
        entry = {"answer": r.answer, "answers": r.answers, "stats": r.stats, "rounds": len(r.trace)}
        if job.include_candidates:
            entry["candidates"] = [
                {
                    "text": c.text,
                    "answer": c.answer,
                    "score": c.score,
                    "step_scores": list(c.step_scores),
                    "finished": c.finished,
                }  # fmt: skip
                for c in r.candidates
            ]
        searches.append(entry)
    return {
        "strategy": job.strategy,
        "n": job.searches[0].n,
        "verifier": job.verifier,
        "options": job.options,
        "searches": searches,
    }


async def run_search(
    engine, job: Job, on_context: Callable[[object], None] | None = None
) -> Outcome:
    results = await asyncio.gather(
        *(run(engine, job.strategy, r, on_context=on_context, **job.options) for r in job.searches)
    )
    choices: list[Choice] = []
    for result in results:
        choices += _choices(result, len(choices))
    stats = sum_stats([r.stats for r in results])
    return Outcome(choices, stats, _details(job, results))


async def run_job(engine, job: Job, request_id: str, on_context=None) -> Outcome:
    if job.strategy is None:
        return await run_plain(engine, job, request_id)
    return await run_search(engine, job, on_context)


def progress(contexts: list, started: float, now: float) -> dict:
    """A snapshot of a running job from its contexts' `progress()` (one context per search):
    `step` is the furthest search's extend count, `best_score` the best over searches, the
    rest are sums. Generated tokens move while an extend runs on ponder's engine; other
    backends count them when it returns."""
    each = [c.progress() for c in contexts]
    scores = [p.best_score for p in each if p.best_score is not None]
    live = [p.live_branches for p in each if p.live_branches is not None]
    return {
        "elapsed_s": round(now - started, 3),
        "searches": len(each),
        "step": max((p.extend_calls for p in each), default=0),
        "live_branches": sum(live) if live else None,
        "best_score": max(scores, default=None),
        "generated_tokens": sum(p.generated_tokens for p in each),
        "verifier_calls": sum(p.verifier_calls for p in each),
    }


async def stream_search(
    engine, job: Job, request_id: str, interval: float
) -> AsyncIterator[dict | Choice | Outcome]:
    """Progress dicts every `interval` seconds while the search runs, then its choices, then
    the Outcome. Closing the iterator (a client gone) cancels the search."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    contexts: list = []
    task = asyncio.ensure_future(run_job(engine, job, request_id, on_context=contexts.append))
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=interval)
            if not task.done():
                yield progress(contexts, started, loop.time())
        outcome = task.result()
    finally:
        if not task.done():
            task.cancel()
    for choice in outcome.choices:
        yield choice
    yield outcome


def stream_job(engine, job: Job, request_id: str, interval: float):
    if job.strategy is None:
        return stream_plain(engine, job, request_id)
    return stream_search(engine, job, request_id, interval)
