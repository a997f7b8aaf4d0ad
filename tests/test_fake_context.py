"""The fake backend behaves like a SearchContext: scripted steps, accounting, release, errors."""

import asyncio

import pytest
from ponder.engine.fake_backend import FakeContext


def counting_policy(text, rng):
    steps = text.count("\n")
    return f"s{steps}\n" if steps < 2 else "A: 1<eos>"


def test_extend_fork_release_and_accounting():
    async def run():
        ctx = FakeContext(counting_policy)
        root = ctx.root("Q: 1\n")
        first = await ctx.extend([root, root], stop=["\n"])
        assert [ctx.text(b) for b in first] == ["s0\n", "s0\n"]
        assert all(b.finish_reason == "stop" and not b.done for b in first)
        kids = ctx.fork(first[0], 3)
        assert all(k.parent == first[0].id and k.length == first[0].length for k in kids)
        ctx.release(first)
        ctx.release(first)  # idempotent
        later = await ctx.extend(kids, stop=["\n"])
        final = await ctx.extend(later, stop=["\n"])
        assert all(b.done and b.finish_reason == "eos" for b in final)
        assert ctx.text(final[0]) == "s0\ns1\nA: 1"
        assert ctx.stats.extend_calls == 3
        assert ctx.stats.generated_tokens == 2 * 3 + 3 * 3 + 3 * 5  # characters (+EOS)
        with pytest.raises(ValueError, match="done"):
            await ctx.extend(final)
        with pytest.raises(ValueError, match="released"):
            ctx.text(first[0])
        ctx.release([root, *kids, *later, *final])
        assert ctx.live == set()

    asyncio.run(run())


def test_max_tokens_and_model_len():
    async def run():
        ctx = FakeContext(lambda text, rng: "abcdef\n", max_model_len=12)
        root = ctx.root("Q: \n")
        short = (await ctx.extend([root], max_tokens=3))[0]
        assert ctx.text(short) == "abc" and short.finish_reason == "length" and not short.done
        long = (await ctx.extend([short], stop=["\n"]))[0]
        assert long.length == 12 and long.finish_reason == "max_model_len" and long.done

    asyncio.run(run())


def test_stop_none_means_the_context_default_as_on_the_engine():
    async def run():
        ctx = FakeContext(counting_policy)
        root = ctx.root("Q: 1\n")
        whole = (await ctx.extend([root]))[0]  # no default stop strings: until EOS
        assert ctx.text(whole) == "s0\ns1\nA: 1" and whole.finish_reason == "eos"
        stepped = FakeContext(counting_policy, stop=["\n"])
        one = (await stepped.extend([stepped.root("Q: 1\n")]))[0]
        assert stepped.text(one) == "s0\n" and one.finish_reason == "stop"
        cut = (await ctx.extend([root], stop=["s1"]))[0]  # cut just after the stop string
        assert ctx.text(cut) == "s0\ns1" and cut.finish_reason == "stop"

    asyncio.run(run())
