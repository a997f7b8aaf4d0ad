"""Scripted fakes shared by the strategy and bench tests: a verifier that reads scores out of
the text ('x@0.9' scores 0.9), requests, a runner that checks no branch leaked, and policies."""

import asyncio
import re

from ponder.engine.fake_backend import FakeContext
from ponder.strategies import STRATEGIES, SearchRequest


class ScriptedVerifier:
    """Scores each step by the number after '@' in it (0 if none): 'x@0.9' -> 0.9."""

    name = "scripted"

    def __init__(self, process=True):
        self.process = process
        self.calls = 0

    def score(self, prompts, candidates, references=None):
        self.calls += len(candidates)
        out = []
        for text in candidates:
            steps = [s for s in text.split("\n") if s]
            scores = [
                float(m.group(1)) if (m := re.search(r"@([0-9.]+)", s)) else 0.0 for s in steps
            ]
            out.append(scores if self.process else scores[-1:] or [0.0])
        return out


def answer_of(text):
    m = re.search(r"A: (\w+)", text)
    return m.group(1) if m else None


def request(n, process=True, **kw):
    return SearchRequest(
        prompt="Q\n", verifier=ScriptedVerifier(process), n=n, extract_answer=answer_of, **kw
    )


def run(strategy, policy, req, seed=0, **options):
    async def go():
        ctx = FakeContext(policy, seed=seed)
        result = await STRATEGIES[strategy](ctx, req, **options)
        assert ctx.live == set(), f"{strategy} leaked branches {ctx.live}"
        return result, ctx

    return asyncio.run(go())


def cycling(solutions):
    """Whole solutions handed out in order, one per sample."""
    state = {"i": 0}

    def policy(text, rng):
        s = solutions[state["i"] % len(solutions)]
        state["i"] += 1
        return s + "<eos>"

    return policy


def step_policy(depth=3):
    """Each step is good (@0.9) or bad (@0.1) at random; after `depth` steps, the answer says
    how many good steps the path had."""

    def policy(text, rng):
        steps = text.count("\n")
        if steps >= depth:
            return f"A: {text.count('@0.9')}@0.5<eos>"
        return "g@0.9\n" if rng.random() < 0.5 else "b@0.1\n"

    return policy
