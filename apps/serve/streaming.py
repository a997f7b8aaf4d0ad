"""Server-sent events for `stream: true`: OpenAI chunks, `data: [DONE]`, and search progress as
SSE comment lines (`: ponder.progress {...}`).

Comments are what every SSE parser skips (the openai client included; a named `event:` would
not do, the client yields those as chunks), so standard clients see a normal stream while a
curl user watches the search work. The generator owns the admission ticket and the job: when the
client goes, sse-starlette cancels the generator and its `finally` cancels the search.
"""

from __future__ import annotations

import json
import time

from ponder.apps.serve.errors import APIError
from ponder.apps.serve.responses import chat_chunks, completion_chunk, usage_chunk
from ponder.apps.serve.runner import Choice, Outcome, stream_job
from sse_starlette import EventSourceResponse, ServerSentEvent


def _chunks(state, choice: Choice, request_id: str, model: str, route: str, top: int) -> list:
    if route == "chat":
        return chat_chunks(request_id, model, choice, state.engine, top)
    return [completion_chunk(request_id, model, choice, state.engine)]


async def _events(state, job, request_id, model, route, include_usage, top, ticket):
    metrics, label = state.metrics, job.label
    started = time.perf_counter()
    first = True
    kind = "chat.completion.chunk" if route == "chat" else "text_completion"
    status = "cancelled"
    items = stream_job(state.engine, job, request_id, state.config.progress_interval_s)
    try:
        async for item in items:
            if isinstance(item, dict):
                yield ServerSentEvent(comment="ponder.progress " + json.dumps(item))
            elif isinstance(item, Choice):
                if first:
                    metrics.ttft.labels(label).observe(time.perf_counter() - started)
                    first = False
                for chunk in _chunks(state, item, request_id, model, route, top):
                    yield ServerSentEvent(json.dumps(chunk))
            elif isinstance(item, Outcome):
                metrics.record_usage(label, item.stats)
                if include_usage:
                    yield ServerSentEvent(json.dumps(usage_chunk(kind, request_id, model, item)))
        status = "200"
        yield ServerSentEvent("[DONE]")
    except ValueError as exc:  # a caller's mistake found while running (e.g. by a verifier)
        status = "400"
        yield ServerSentEvent(json.dumps(APIError(400, str(exc)).body()))
        yield ServerSentEvent("[DONE]")
    finally:
        await items.aclose()
        ticket.release()
        metrics.latency.labels(label).observe(time.perf_counter() - started)
        metrics.requests.labels(route, label, status).inc()


def event_stream(state, job, request_id, model, route, include_usage, top, ticket):
    events = _events(state, job, request_id, model, route, include_usage, top, ticket)
    return EventSourceResponse(events, sep="\n", ping=15)
