"""The server under faults: clients that disconnect, a full queue, SIGTERM, and a schema fuzz
of its own OpenAPI description with zero 5xx."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.generation.modes import GenerationMode

from tests.serve_helpers import API_KEY, running_server, server_config

AUTH = {"Authorization": f"Bearer {API_KEY}"}
HARD = "Q: 12+7*3-5+8*9-3+4*4-2\n"


async def _client_that_leaves(url: str, rng: random.Random) -> None:
    body = {"model": "ponder-embedded", "prompt": HARD, "max_tokens": 128,
            "stream": rng.random() < 0.5}  # fmt: skip
    if rng.random() < 0.7:
        body["ponder"] = {"strategy": rng.choice(["bon", "particle", "beam"]), "n": 8,
                          "options": {"beam_width": 2} if rng.random() < 0 else {}}  # fmt: skip
        if body["ponder"]["strategy"] == "beam":
            body["ponder"]["options"] = {"beam_width": 2}
    timeout = httpx.Timeout(rng.uniform(0.05, 1.0))
    async with httpx.AsyncClient(timeout=timeout) as client:
        try:
            r = await client.post(url + "/v1/completions", json=body, headers=AUTH)
            assert r.status_code < 500, r.text
        except httpx.TimeoutException:
            pass  # the client hangs up mid-request or mid-stream


def _wait_idle(engine, baseline: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while (used := engine.kv_stats.used) != baseline and time.monotonic() < deadline:
        time.sleep(0.1)
    return used


def test_disconnects_cancel_searches_and_free_kv():
    with running_server(server_config()) as server:
        baseline = server.engine.kv_stats.used
        rng = random.Random(0)

        async def load() -> None:
            await asyncio.gather(*(_client_that_leaves(server.url, rng) for _ in range(24)))

        asyncio.run(load())
        assert httpx.get(server.url + "/health").status_code == 200
        assert _wait_idle(server.engine, baseline, 20) == baseline


def test_a_plain_stream_left_mid_way_is_aborted_and_frees_its_blocks():
    with running_server(server_config()) as server:
        baseline = server.engine.kv_stats.used
        body = {"model": "ponder-embedded", "prompt": HARD, "max_tokens": 128, "n": 8,
                "stream": True}  # fmt: skip
        with httpx.stream("POST", server.url + "/v1/completions", json=body, headers=AUTH) as r:
            data = (line for line in r.iter_lines() if line.startswith("data: {"))
            first = [json.loads(next(data)[6:]) for _ in range(3)]
        assert all(c["choices"][0]["finish_reason"] is None for c in first)  # left mid-way
        assert _wait_idle(server.engine, baseline, 20) == baseline
        assert server.engine.live_handles == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = httpx.get(server.url + "/metrics", headers=AUTH).text
            if 'route="completions",status="cancelled",strategy="plain"' in text:
                break
            time.sleep(0.1)
        assert 'route="completions",status="cancelled",strategy="plain"' in text


def test_full_queue_gets_429_or_503_never_500():
    config = server_config(max_concurrent=1, max_queue=1, queue_timeout_s=0.3)
    with running_server(config) as server:
        body = {"model": "ponder-embedded", "prompt": HARD, "max_tokens": 128,
                "ponder": {"strategy": "bon", "n": 32}}  # fmt: skip

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                calls = [client.post(server.url + "/v1/completions", json=body, headers=AUTH)
                         for _ in range(5)]  # fmt: skip
                return list(await asyncio.gather(*calls))

        statuses = [r.status_code for r in asyncio.run(burst())]
        assert 200 in statuses and set(statuses) <= {200, 429, 503}, statuses
        refused = {429, 503} & set(statuses)
        assert refused, statuses
        r = httpx.post(server.url + "/v1/completions", json=body, headers=AUTH, timeout=60)
        assert r.status_code == 200  # the server stayed up


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serve_answers_then_exits_cleanly_on_sigterm():
    port = _free_port()
    env = {**os.environ, "PONDER_API_KEY": "k"}
    cmd = [sys.executable, "-m", "ponder.apps.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        body = {"model": "ponder-embedded:majority?n=4", "prompt": HARD, "max_tokens": 64}
        r = httpx.post(url + "/v1/completions", json=body, headers={"Authorization": "Bearer k"},
                       timeout=60)  # fmt: skip
        assert r.status_code == 200 and r.json()["ponder"]["strategy"] == "majority"
        assert httpx.post(url + "/v1/completions", json=body).status_code == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def fuzz_server():
    config = server_config(max_tokens=8, max_n=2, max_width=4, max_budget_tokens=256)
    config = type(config)(**{**config.__dict__, "api_key": None})
    with running_server(config) as server:
        yield server


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_schema_fuzz_finds_no_5xx(fuzz_server, path, mode):
    schema = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")
    operation = schema[path]["POST"]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=25, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def check(case) -> None:
        response = case.call(base_url=fuzz_server.url, timeout=30)
        assert response.status_code < 500, (case.body, response.text)
        if response.status_code >= 400:
            assert "error" in response.json(), response.text

    check()
