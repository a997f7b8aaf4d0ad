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
from dataclasses import dataclass

from ponder.apps.serve.batch import stream_jobs
from ponder.apps.serve.errors import APIError
from ponder.apps.serve.responses import chat_chunks, completion_chunk, usage_chunk
from ponder.apps.serve.runner import Choice, Outcome
from sse_starlette import EventSourceResponse, ServerSentEvent


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """What the chunks of one streamed request carry, and when the request arrived."""

    request_id: str
    model: str
    route: str  # "completions" or "chat"
    include_usage: bool
    top_logprobs: int
    started: float  # time.perf_counter() at arrival: time to first token includes the queue

    @property
    def kind(self) -> str:
        return "chat.completion.chunk" if self.route == "chat" else "text_completion"


def _chunks(state, choice: Choice, req: StreamRequest, first: bool) -> list:
    if req.route == "chat":
        return chat_chunks(req.request_id, req.model, choice, state.engine, req.top_logprobs, first)
    return [completion_chunk(req.request_id, req.model, choice, state.engine)]


async def _events(state, jobs, req: StreamRequest, ticket):
    metrics, label = state.metrics, jobs[0].label
    seen: set[int] = set()  # choice indices that have sent a delta
    status = "cancelled"
    items = stream_jobs(state.engine, jobs, req.request_id, state.config.progress_interval_s)
    try:
        async for item in items:
            if isinstance(item, dict):
                yield ServerSentEvent(comment="ponder.progress " + json.dumps(item))
            elif isinstance(item, Choice):
                if not seen:
                    metrics.ttft.labels(label).observe(time.perf_counter() - req.started)
                first = item.index not in seen
                seen.add(item.index)
                for chunk in _chunks(state, item, req, first):
                    yield ServerSentEvent(json.dumps(chunk))
            elif isinstance(item, Outcome):
                metrics.record_usage(label, item.stats)
                if req.include_usage:
                    chunk = usage_chunk(req.kind, req.request_id, req.model, item)
                    yield ServerSentEvent(json.dumps(chunk))
        status = "200"
        yield ServerSentEvent("[DONE]")
    except ValueError as exc:  # a caller's mistake found while running (e.g. by a verifier)
        status = "400"
        yield ServerSentEvent(json.dumps(APIError(400, str(exc)).body()))
        yield ServerSentEvent("[DONE]")
    finally:
        await items.aclose()
        ticket.release()
        metrics.latency.labels(label).observe(time.perf_counter() - req.started)
        metrics.requests.labels(req.route, label, status).inc()


def event_stream(state, jobs, req: StreamRequest, ticket) -> EventSourceResponse:
    """The SSE response of a request's jobs (one per prompt, batch.py)."""
    return EventSourceResponse(_events(state, jobs, req, ticket), sep="\n", ping=15)
