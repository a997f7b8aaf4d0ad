"""A real ponder server for the tests: uvicorn in a thread on a free loopback port.

    with running_server(ServerConfig(...)) as server: server.url, server.engine

The engine is the embedded model with a small KV pool; the server speaks real HTTP, so the tests
use the official openai client exactly as a user would.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass

import httpx
import uvicorn
from ponder.apps.serve import Limits, ServerConfig, create_app
from ponder.engine import Engine
from ponder.tasks.arith.verifiers import extract_answer
from ponder.tasks.registry import make_verifier

API_KEY = "test-key"


def server_config(**limits) -> ServerConfig:
    return ServerConfig(
        api_key=API_KEY,
        verifiers={n: make_verifier(n) for n in ("arith_step", "arith_outcome")},
        default_verifier="arith_step",
        extract_answer=extract_answer,
        limits=Limits(**{"max_tokens": 128, "max_n": 8, "max_width": 32, **limits}),
        progress_interval_s=0.05,
    )


@dataclass
class Running:
    url: str
    engine: Engine
    app: object

    def client(self, key: str = API_KEY):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=60)


@contextlib.contextmanager
def running_server(config: ServerConfig, engine: Engine | None = None):
    own = engine is None
    engine = engine or Engine.from_pretrained(num_blocks=2048)
    app = create_app(engine, config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not (server.started and server.servers):
        if time.monotonic() > deadline:
            raise RuntimeError("the test server did not start within 30 s")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    httpx.get(url + "/health").raise_for_status()
    try:
        yield Running(url, engine, app)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        if own:
            engine.close()
