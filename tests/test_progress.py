"""SearchContext.progress(): step count, live branches, best score so far, generated tokens and
verifier calls of a running search, on the fake backend and on ponder's engine (whose token
count moves while an extend runs)."""

import asyncio

from ponder.engine import Engine, SamplingParams
from ponder.engine.fake_backend import FakeContext


def policy(text, rng):
    steps = text.count("\n")
    return f"s{steps}\n" if steps < 3 else "A: 1<eos>"


class LengthVerifier:
    """Scores a text by its length: one step score, len(text)."""

    name = "length"

    def score(self, prompts, texts, references):
        return [[float(len(t))] for t in texts]


def test_fake_progress_tracks_steps_branches_and_best_score():
    async def run():
        ctx = FakeContext(policy)
        start = ctx.progress()
        assert (start.extend_calls, start.live_branches, start.best_score) == (0, 0, None)
        root = ctx.root("Q: 1\n")
        first = await ctx.extend([root] * 3, stop=["\n"])
        p = ctx.progress()
        assert (p.extend_calls, p.live_branches, p.generated_tokens) == (1, 4, 9)
        await ctx.score(first[:2], LengthVerifier())
        later = await ctx.extend(first[:1], stop=["\n"], release_inputs=True)
        await ctx.score(later, LengthVerifier())
        p = ctx.progress()
        assert p.best_score == 6.0 and p.verifier_calls == 3 and p.live_branches == 4
        await ctx.score(first[1:], LengthVerifier())  # lower scores leave the best alone
        assert ctx.progress().best_score == 6.0
        ctx.close()
        assert ctx.progress().live_branches == 0
        assert ctx.progress().as_dict()["generated_tokens"] == 12

    asyncio.run(run())


def test_engine_progress_counts_tokens_while_an_extend_runs():
    with Engine.from_pretrained(num_blocks=512) as engine:

        async def run():
            params = SamplingParams(max_tokens=200, ignore_eos=True, seed=0)
            async with engine.search(params, seed=0) as ctx:
                root = ctx.root("Q: 12+7*3-5\n")
                task = asyncio.ensure_future(ctx.extend([root] * 4))
                seen = []
                while not task.done():
                    await asyncio.sleep(0.01)
                    seen.append(ctx.progress())
                kids = task.result()
                during = [p.generated_tokens for p in seen if p.extend_calls == 1]
                assert ctx.stats.generated_tokens == 800
                # counted as sampled, before the extend returned, and never going back
                assert any(0 < t < 800 for t in during), during
                assert during == sorted(during)
                assert ctx.progress().generated_tokens == 800
                assert ctx.progress().live_branches == 5
                ctx.release(kids)
                assert ctx.progress().live_branches == 1

        asyncio.run(run())
