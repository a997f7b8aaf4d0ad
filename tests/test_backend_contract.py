"""One contract, every SearchContext backend: the same scenarios and assertions for each.

To add a backend, add one entry to BACKENDS: a function that returns a `Backend` (a context
factory `make(params: SamplingParams) -> SearchContext`, a cleanup or None, and what kind of
backend it is), or calls pytest.skip saying what it needs. The scenarios only use the protocol's
verbs and a prompt from the arith world ("Q: ...\\n"), whose answers are steps ending in "\\n"
and then EOS.

Two kinds of backend keep two contracts where they legitimately differ (DESIGN.md, boundary 4),
and each scenario asserts the one its backend states, never skipping:
- explicit (the fake, ponder's engine): ponder holds the KV. Each prompt token is computed or
  served from the cache exactly once (computed + cached == prompt tokens, nothing recomputed),
  `release` frees KV at once (the engine's cleanup checks nothing is left), and extend calls
  report the engine steps they waited (latency_steps > 0).
- implicit (vLLM, a remote server): the engine holds the KV. Every submission of a branch's ids
  is counted: computed (a root's first), recomputed (later ones) or cached, summing to the
  tokens submitted; `release` only forgets ids (the engine evicts on its own); engine steps
  are invisible, so latency_steps stays 0 rather than guessed.
"""

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from ponder.engine import SamplingParams
from ponder.engine.fake_backend import FakeContext
from ponder.engine.protocol import FINISH_REASONS, Branch

PROMPT = "Q: 2+3*4\n"


@dataclass(frozen=True)
class Backend:
    make: Callable  # SamplingParams -> SearchContext
    cleanup: Callable[[], None] | None
    explicit: bool  # ponder holds the KV (see the module docstring)


def arith_policy(text, rng):
    """Two steps, then an answer and EOS: the shape of the embedded model's solutions."""
    steps = text.count("\n") - PROMPT.count("\n")
    return ["3*4=12\n", "2+12=14\n"][steps] if steps < 2 else "A: 14<eos>"


def fake_backend():
    def make(params: SamplingParams):
        return FakeContext(arith_policy, stop=params.stop, max_tokens=params.max_tokens)

    return Backend(make, None, explicit=True)


def engine_backend():
    from ponder.engine import Engine

    torch.set_num_threads(1)
    engine = Engine.from_pretrained(None, device="cpu", block_size=4, num_blocks=512)

    def make(params: SamplingParams):
        return engine.search(params, seed=0)

    def cleanup():
        assert engine.live_handles == 0 and engine.kv_stats.used == 0
        engine.close()

    return Backend(make, cleanup, explicit=True)


def remote_backend():
    """RemoteBackend over HTTP against `ponder serve` (its own engine) on a free loopback port."""
    pytest.importorskip(
        "fastapi", reason="the remote fixture serves with ponder serve (extra: server)"
    )
    from ponder.engine.remote_backend import RemoteBackend
    from serve_helpers import API_KEY, running_server, server_config

    server = running_server(server_config(max_n=8, max_tokens=512))
    running = server.__enter__()
    backend = RemoteBackend(running.url, api_key=API_KEY, retries=0)

    def make(params: SamplingParams):
        return backend.search(params, seed=0)

    def cleanup():
        server.__exit__(None, None, None)
        assert running.engine.live_handles == 0  # every search the server opened was closed

    return Backend(make, cleanup, explicit=False)


def vllm_backend(tmp_path_factory=None):
    """VLLMBackend in process; only where `import vllm` works (its own venv, README)."""
    pytest.importorskip("vllm", reason="vLLM lives in its own venv: run this file there too")
    import tempfile

    os.environ.setdefault("VLLM_CACHE_ROOT", tempfile.mkdtemp(prefix="vllm-cache-"))
    from ponder.engine.vllm_backend import VLLMBackend

    backend = VLLMBackend()

    def make(params: SamplingParams):
        return backend.search(params, seed=0)

    return Backend(make, backend.close, explicit=False)


BACKENDS = {
    "fake": fake_backend,
    "engine": engine_backend,
    "remote": remote_backend,
    "vllm": vllm_backend,
}


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def backend(request):
    made = BACKENDS[request.param]()
    yield made
    if made.cleanup is not None:
        made.cleanup()


def run(coro):
    return asyncio.run(coro)


class LengthVerifier:
    name = "length"
    process = False

    def __init__(self):
        self.seen = []

    def score(self, prompts, candidates, references=None):
        self.seen.append((list(prompts), list(candidates), references))
        return [[float(len(c))] for c in candidates]


def test_stop_semantics(backend):
    async def go():
        async with backend.make(SamplingParams(temperature=0.0, max_tokens=64)) as ctx:
            root = ctx.root(PROMPT)
            step = (await ctx.extend([root], stop=["\n"]))[0]
            assert step.finish_reason == "stop" and ctx.text(step).endswith("\n")
            assert ctx.text(step).count("\n") == 1
            whole = (await ctx.extend([root], stop=[]))[0]  # no stop strings: until EOS
            default = (await ctx.extend([root]))[0]  # stop=None: the context's (none)
            assert whole.finish_reason == default.finish_reason == "eos" and whole.done
            assert ctx.text(whole).count("\n") >= 2
            short = (await ctx.extend([root], max_tokens=2))[0]
            assert short.finish_reason == "length" and short.num_generated == 2
            assert not short.done
        async with backend.make(SamplingParams(temperature=0.0, stop=["\n"])) as ctx:
            step = (await ctx.extend([ctx.root(PROMPT)]))[0]  # stop=None: the default "\n"
            assert step.finish_reason == "stop" and ctx.text(step).endswith("\n")

    run(go())


def test_fork_extend_release_and_accounting(backend):
    async def go():
        async with backend.make(SamplingParams(temperature=1.0, max_tokens=64)) as ctx:
            root = ctx.root(PROMPT)
            first = await ctx.extend([root, root, root], stop=["\n"])
            assert [b.parent for b in first] == [root.id] * 3
            kids = ctx.fork(first[0], 2)
            assert all(k.parent == first[0].id and k.length == first[0].length for k in kids)
            assert ctx.tokens(kids[0]) == ctx.tokens(first[0])
            ctx.release(first)
            ctx.release(first)  # idempotent
            later = await ctx.extend(kids, stop=["\n"], release_inputs=True)
            for b in later:
                assert b.parent in {k.id for k in kids} and b.finish_reason in FINISH_REASONS
                assert b.length > first[0].length
            with pytest.raises(ValueError, match="released"):
                ctx.text(kids[0])
            s = ctx.stats
            assert s.samples == 5 and s.extend_calls == 2
            assert s.prompt_tokens == root.length
            if backend.explicit:  # each prompt token computed or cached once, none again
                assert s.computed_prompt_tokens + s.cached_prompt_tokens == root.length
                assert s.recomputed_tokens == 0
            else:  # two submissions: the root's ids (n=3), then first[0]'s (the 2 forks, n=2)
                submitted = root.length + first[0].length
                assert s.computed_prompt_tokens + s.recomputed_tokens + s.cached_prompt_tokens == (
                    submitted
                )
                assert 0 < s.computed_prompt_tokens <= root.length
            generated = sum(b.num_generated for b in first) + sum(
                b.length - first[0].length for b in later
            )
            assert s.generated_tokens == generated
            if backend.explicit:
                assert s.latency_steps > 0
            else:  # the engine's steps are not visible through its API: reported as 0
                assert s.latency_steps == 0 and s.queue_seconds == 0

    run(go())


def test_score_shape_and_call(backend):
    async def go():
        async with backend.make(SamplingParams(temperature=0.0, max_tokens=64)) as ctx:
            root = ctx.root(PROMPT)
            branches = await ctx.extend([root, root], stop=["\n"])
            verifier = LengthVerifier()
            scores = await ctx.score(branches, verifier, reference="14")
            assert scores == [[float(len(ctx.text(b)))] for b in branches]
            assert verifier.seen[0][2] == ["14", "14"]
            assert await ctx.score(branches, verifier) == scores
            assert verifier.seen[1][2] is None  # one call shape, references or None
            assert await ctx.score([], verifier) == []
            assert ctx.stats.verifier_calls == 4

    run(go())


def test_errors(backend):
    async def go():
        async with backend.make(SamplingParams(temperature=0.0, max_tokens=64)) as ctx:
            root = ctx.root(PROMPT)
            with pytest.raises(ValueError, match="empty"):
                ctx.root("")
            with pytest.raises(ValueError, match="n >= 1"):
                ctx.fork(root, 0)
            with pytest.raises(ValueError, match="max_tokens"):
                await ctx.extend([root], max_tokens=0)
            with pytest.raises(ValueError, match="stop"):
                await ctx.extend([root], stop=[""])
            done = (await ctx.extend([root], stop=[]))[0]
            with pytest.raises(ValueError, match="done"):
                await ctx.extend([done])
            with pytest.raises(ValueError, match="unknown|released"):
                await ctx.extend([Branch(10**9, None, 3, 3)])
        with pytest.raises(RuntimeError, match="closed"):
            ctx.root(PROMPT)

    run(go())


def test_cancellation_mid_extend_releases_only_that_call(backend):
    async def go():
        async with backend.make(SamplingParams(temperature=1.0, max_tokens=64)) as ctx:
            root = ctx.root(PROMPT)
            kept = (await ctx.extend([root], stop=["\n"]))[0]
            task = asyncio.ensure_future(ctx.extend([kept] * 8, stop=[]))
            await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            after = await ctx.extend([kept], stop=["\n"])  # the caller's branches still work
            assert after[0].parent == kept.id and ctx.text(kept)

    run(go())
