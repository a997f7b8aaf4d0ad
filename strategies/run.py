"""One call to run a search, for Python, the CLI, the server, the benchmarks and align alike.

    result = await search(engine, "particle", "Q: 12+7*3-5\\n", n=16, verifier=v, seed=0, tau=0.5)
    results = search_batch(engine, "bon", prompts, n=8, verifier=v, seed=0)   # sync, offline

`backend` is anything with `search(params, *, seed, question) -> SearchContext` (ponder's own
Engine, and every other backend). Keyword arguments that name a SearchRequest field (n, seed,
temperature, top_p, top_k, step_delimiter, max_steps, max_step_tokens, max_tokens, budget,
aggregation, extract_answer, reference, question, verifier) build the request; the rest are the
strategy's own options, checked against its signature before anything runs. `run` takes a
ready SearchRequest. Each search opens its own context (released when it ends, whatever
happens), so many searches awaited together share the backend's batching. In `search_batch`
prompt i gets seed problem_seed(seed, i): the same derivation `ponder eval` uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Protocol

from ponder.engine.protocol import SearchContext
from ponder.engine.sampling_params import SamplingParams
from ponder.strategies.base import SearchRequest, SearchResult, problem_seed
from ponder.strategies.registry import get_strategy

REQUEST_FIELDS = frozenset(f.name for f in fields(SearchRequest)) - {"prompt"}


class Backend(Protocol):
    def search(
        self, params: SamplingParams | None = None, *, seed: int | None, question: str | None
    ) -> SearchContext: ...


def split_settings(settings: dict) -> tuple[dict, dict]:
    """(SearchRequest fields, strategy options) of one keyword-argument dict."""
    request = {k: v for k, v in settings.items() if k in REQUEST_FIELDS}
    options = {k: v for k, v in settings.items() if k not in REQUEST_FIELDS}
    return request, options


async def run(
    backend: Backend,
    strategy: str,
    request: SearchRequest,
    *,
    on_context: Callable[[SearchContext], None] | None = None,
    **options,
) -> SearchResult:
    """Run one strategy on one request in a context of its own. `on_context` sees the context
    once it is open (a server reads its live accounting for progress events)."""
    spec = get_strategy(strategy)
    spec.check(request, options)
    context = backend.search(request.sampling_params, seed=request.seed, question=request.question)
    async with context as ctx:
        if on_context is not None:
            on_context(ctx)
        return await spec.run(ctx, request, **options)


async def search(backend: Backend, strategy: str, prompt, **settings) -> SearchResult:
    """Build the request from `settings`, then `run` it (see the module docstring)."""
    request_fields, options = split_settings(settings)
    return await run(backend, strategy, SearchRequest(prompt=prompt, **request_fields), **options)


def search_batch(
    backend: Backend,
    strategy: str,
    prompts: Sequence,
    *,
    seed: int = 0,
    concurrency: int = 64,
    **settings,
) -> list[SearchResult]:
    """Search every prompt (prompt i seeded with problem_seed(seed, i)), `concurrency` at once
    on the shared backend; results in prompt order. Synchronous: for scripts and notebooks
    without a running event loop."""
    request_fields, options = split_settings(settings)
    requests = [
        SearchRequest(prompt=p, seed=problem_seed(seed, i), **request_fields)
        for i, p in enumerate(prompts)
    ]
    if requests:  # refuse bad options once, before any search starts
        get_strategy(strategy).check(requests[0], options)
    gate = asyncio.Semaphore(concurrency)

    async def one(request: SearchRequest) -> SearchResult:
        async with gate:
            return await run(backend, strategy, request, **options)

    async def every() -> list[SearchResult]:
        return list(await asyncio.gather(*(one(r) for r in requests)))

    return asyncio.run(every())
