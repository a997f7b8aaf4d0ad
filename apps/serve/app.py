"""The FastAPI app: routes, auth, limits and metrics around one shared engine.

    GET /health  GET /v1/models  GET /metrics  POST /v1/completions  POST /v1/chat/completions

Each completion request is parsed (schemas.py), turned into a Job (one per prompt of a batch,
batch.py) with every limit checked (requests.py), admitted (admission.py), run (runner.py) and
formatted (responses.py); streamed ones go out as SSE (streaming.py). A client that disconnects
cancels its job. The app does not own the engine: whoever made it closes it.
"""

import asyncio
import secrets
import time
import uuid
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

# no `from __future__ import annotations`: FastAPI reads the auth dependency's annotation live
from ponder.apps.serve.admission import Admission
from ponder.apps.serve.batch import per_prompt, run_jobs
from ponder.apps.serve.body_limit import BodyLimit
from ponder.apps.serve.config import ServerConfig
from ponder.apps.serve.errors import (
    APIError,
    api_error_handler,
    http_error_handler,
    validation_error_handler,
    value_error_handler,
)
from ponder.apps.serve.metrics import Metrics
from ponder.apps.serve.requests import build_job
from ponder.apps.serve.responses import chat_body, completion_body
from ponder.apps.serve.schemas import ChatRequest, CompletionRequest
from ponder.apps.serve.streaming import StreamRequest, event_stream
from starlette.exceptions import HTTPException


class ServerState:
    """What every route reads: the engine, the config, the metrics and the admission gate."""

    def __init__(self, engine, config: ServerConfig):
        self.engine = engine
        self.config = config
        self.metrics = Metrics()
        self.admission = Admission(config.limits, self.metrics)
        self.started = int(time.time())


def _auth_dependency(config: ServerConfig):
    bearer = HTTPBearer(auto_error=False)

    async def check(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if config.api_key is None:
            return
        given = creds.credentials if creds is not None else ""
        if not secrets.compare_digest(given.encode(), config.api_key.encode()):
            raise APIError(
                401, "missing or wrong API key (send 'Authorization: Bearer <key>')",
                code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip

    return check


async def _until_done_or_gone(request: Request, task: asyncio.Task):
    """The task's result, or None after cancelling it when the client has gone."""
    while not task.done():
        await asyncio.wait({task}, timeout=0.1)
        if not task.done() and await request.is_disconnected():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return None
    return task.result()


async def _complete(state: ServerState, request: Request, body, route: str) -> Response:
    """Build, admit and run one completion request; count it by strategy and status."""
    metrics, started, label = state.metrics, time.perf_counter(), "unknown"
    chat = route == "chat"
    prefix = "chatcmpl" if chat else "cmpl"
    request_id = f"{prefix}-{uuid.uuid4().hex[:24]}"
    try:
        bodies = [body] if chat else per_prompt(body, state.config.limits.max_n)
        jobs = [build_job(state.engine, b, state.config) for b in bodies]
        label = jobs[0].label
        ticket = await state.admission.acquire()
    except APIError as exc:
        metrics.requests.labels(route, label, str(exc.status)).inc()
        raise
    top = (body.top_logprobs or 0) if chat else 0
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        req = StreamRequest(request_id, body.model, route, include_usage, top, started)
        return event_stream(state, jobs, req, ticket)
    try:
        task = asyncio.ensure_future(run_jobs(state.engine, jobs, request_id))
        outcome = await _until_done_or_gone(request, task)
    finally:
        ticket.release()
    if outcome is None:
        metrics.requests.labels(route, label, "cancelled").inc()
        return Response(status_code=499)
    metrics.record_usage(label, outcome.stats)
    metrics.latency.labels(label).observe(time.perf_counter() - started)
    metrics.requests.labels(route, label, "200").inc()
    if chat:
        return JSONResponse(chat_body(state.engine, outcome, request_id, body.model, top))
    return JSONResponse(
        completion_body(state.engine, outcome, request_id, body.model, body.return_token_ids)
    )


def create_app(engine, config: ServerConfig | None = None) -> FastAPI:
    config = config or ServerConfig()
    state = ServerState(engine, config)
    app = FastAPI(title="ponder", summary="OpenAI-compatible server with per-request search")
    app.state.ponder = state
    app.add_exception_handler(APIError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
    app.add_exception_handler(ValueError, value_error_handler)
    app.add_middleware(BodyLimit, max_bytes=config.limits.max_body_bytes)
    auth = [Depends(_auth_dependency(config))]

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models", dependencies=auth)
    async def models() -> dict:
        card = {"id": config.model_name, "object": "model", "created": state.started,
                "owned_by": "ponder", "max_model_len": engine.max_model_len}  # fmt: skip
        return {"object": "list", "data": [card]}

    @app.get("/metrics", dependencies=auth)
    async def metrics() -> Response:
        kv = await asyncio.to_thread(lambda: engine.kv_stats)
        return Response(state.metrics.render(kv), media_type="text/plain; version=0.0.4")

    @app.post("/v1/completions", dependencies=auth)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await _complete(state, request, body, "completions")

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(body: ChatRequest, request: Request) -> Response:
        return await _complete(state, request, body, "chat")

    return app
