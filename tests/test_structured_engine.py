"""Constrained decoding on the embedded model: every JSON sample validates against its schema
(per backend), regex and choice outputs match, forks inherit and then diverge grammar state,
bad constraints fail at submission, and length limits and dead ends end sequences cleanly,
with a KV leak check after each test."""

import asyncio
import importlib.util
import json
import re

import jsonschema
import pytest
import torch
from ponder.engine import Engine, SamplingParams
from ponder.engine.structured import StructuredOutputsParams as S
from ponder.engine.structured import bitmask
from ponder.engine.structured.compiler import DEFAULT_BACKEND
from ponder.engine.structured.state import CompiledGrammar

from tests.structured_cases import RANGE_FREE, REGEXES, SCHEMAS

BACKENDS = ["outlines", "llguidance"] + (
    ["xgrammar"] if importlib.util.find_spec("xgrammar") else []
)
PROMPT = "Q: 3+4*2\n"


@pytest.fixture(scope="module")
def engines():
    torch.set_num_threads(1)
    made = {b: Engine.from_pretrained(None, device="cpu", structured_backend=b) for b in BACKENDS}
    yield made
    for eng in made.values():
        eng.close()


@pytest.fixture(autouse=True)
def no_leaks(engines):
    yield
    for eng in engines.values():
        assert eng.live_handles == 0 and eng.kv_stats.used == 0


def grammar_of(eng, ctx, branch):
    """A branch's grammar state in the core's handle table (read after a snapshot, which
    runs on the loop thread after every command posted before it)."""
    assert eng.live_handles > 0
    return eng.core.handles.get(branch.id, ctx.owner).grammar


def sample(engine, constraint, n=8, max_tokens=160, temperature=1.0, seed=0):
    params = SamplingParams(
        n=n,
        temperature=temperature,
        seed=seed,
        max_tokens=max_tokens,
        structured_outputs=constraint,
    )
    return engine.generate(PROMPT, params)[0].outputs


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(SCHEMAS))
def test_every_json_sample_validates(engines, backend, name):
    if backend == "outlines" and name not in RANGE_FREE:
        pytest.skip("outlines-core's schema regexes do not enforce minimum/maximum")
    schema = SCHEMAS[name]
    for out in sample(engines[backend], S(json=schema)):
        assert out.finish_reason == "stop", out.text
        jsonschema.validate(json.loads(out.text), schema)


@pytest.mark.parametrize("backend", BACKENDS)
def test_regex_choice_and_json_object(engines, backend):
    eng = engines[backend]
    for name, rx in REGEXES.items():
        for out in sample(eng, S(regex=rx)):
            assert re.fullmatch(rx, out.text), (name, out.text)
    outs = sample(eng, S(choice=["yes", "no", "3+4"]), temperature=2.0)
    assert {o.text for o in outs} <= {"yes", "no", "3+4"}
    (greedy,) = sample(eng, S(json_object=True), n=1, temperature=0.0)
    assert isinstance(json.loads(greedy.text), dict)


def test_constrained_greedy_is_the_best_allowed_token(engines):
    """At temperature 0, the choice that wins is the one the model's own greedy text starts."""
    eng = engines[DEFAULT_BACKEND]
    (free,) = eng.generate(PROMPT, SamplingParams(temperature=0.0, max_tokens=4))[0].outputs
    (forced,) = sample(eng, S(choice=[free.text[:2], "zz"]), n=1, temperature=0.0)
    assert forced.text == free.text[:2]


@pytest.mark.parametrize("backend", BACKENDS)
def test_forks_inherit_then_diverge(engines, backend):
    eng = engines[backend]
    rx = r"[0-9]{3}(x[0-9]{2}|y[0-9]{3})"
    params = SamplingParams(temperature=1.5, max_tokens=32, structured_outputs=S(regex=rx))

    async def run():
        async with eng.search(params, seed=1) as ctx:
            (head,) = await ctx.extend([ctx.root(PROMPT)], max_tokens=2)
            parent_state = grammar_of(eng, ctx, head)
            parent_mask = parent_state.bitmask.clone()
            kids = ctx.fork(head, 6)
            # shared, not copied
            assert all(grammar_of(eng, ctx, k) is parent_state for k in kids)
            done = await ctx.extend(kids)
            assert torch.equal(parent_state.bitmask, parent_mask)  # the parent is untouched
            assert grammar_of(eng, ctx, head) is parent_state
            assert all(grammar_of(eng, ctx, b) is not parent_state for b in done)
            return ctx.text(head), [ctx.text(b) for b in done]

    head, texts = asyncio.run(run())
    assert len(head) == 2 and all(t.startswith(head) for t in texts)
    assert all(re.fullmatch(rx, t) for t in texts), texts
    assert len(set(texts)) > 1  # the forks diverged


def test_multi_step_extend_carries_the_state(engines):
    """A constraint spans several extends (a search's steps): the state moves with the branch."""
    eng = engines[DEFAULT_BACKEND]
    rx = r"(1\+1=2\n){2}A: 2"
    params = SamplingParams(temperature=1.0, structured_outputs=S(regex=rx))

    async def run():
        async with eng.search(params, seed=0) as ctx:
            branch = ctx.root(PROMPT)
            for _ in range(3):
                (branch,) = await ctx.extend([branch], stop=["\n"])
            return ctx.text(branch), branch.finish_reason

    text, reason = asyncio.run(run())
    assert text == "1+1=2\n1+1=2\nA: 2" and reason == "eos"


@pytest.mark.parametrize(
    "constraint, message",
    [
        (S(grammar="start: 'a'"), "grammar needs the llguidance"),
        (S(regex="\u00e9+"), "outlines"),  # no token of the character vocabulary spells it
    ],
)
def test_a_constraint_the_backend_rejects_fails_at_submission(engines, constraint, message):
    eng = engines["outlines"]
    with pytest.raises(ValueError, match=message):
        eng.generate(PROMPT, SamplingParams(structured_outputs=constraint))
    assert eng.generate(PROMPT, SamplingParams(max_tokens=3))[0].outputs  # still serving


def test_lark_grammar_on_llguidance(engines):
    lark = 'start: "A: " NUM\nNUM: /[0-9]{1,3}/'
    for out in sample(engines["llguidance"], S(grammar=lark)):
        assert re.fullmatch(r"A: [0-9]{1,3}", out.text)
    with pytest.raises(ValueError, match="llguidance rejects"):
        sample(engines["llguidance"], S(grammar="start: undefined_rule"))


def test_unsatisfiable_within_max_tokens_is_length(engines):
    eng = engines[DEFAULT_BACKEND]
    outs = sample(eng, S(regex=r"[0-9]{50}"), n=3, max_tokens=10)
    assert all(o.finish_reason == "length" and re.fullmatch(r"[0-9]{10}", o.text) for o in outs)


def test_a_dead_end_ends_the_sequence_cleanly(engines):
    """A grammar whose mask empties after one token (as a vocabulary that cannot spell the
    rest would): the sequence stops there, nothing leaks, the engine goes on."""
    eng = engines[DEFAULT_BACKEND]
    one = eng.tokenizer.convert_tokens_to_ids("1")

    class OneThenNothing:
        def __init__(self, pos=0):
            self.pos = pos

        def bitmask(self):
            return bitmask.pack([one] if self.pos == 0 else [], eng.grammars.table.vocab_size)

        def advance(self, token_id):
            return OneThenNothing(self.pos + 1) if self.pos == 0 and token_id == one else None

    constraint = S(regex="dead-end-test")
    table = eng.grammars.table
    eng.grammars._cache[constraint] = CompiledGrammar(
        type("G", (), {"start": lambda self: OneThenNothing()})(),
        bitmask.pack(table.eos_ids, table.vocab_size),
        frozenset(table.eos_ids),
        "scripted",
        0.0,
    )
    outs = sample(eng, constraint, n=2)
    assert [(o.text, o.finish_reason) for o in outs] == [("1", "stop")] * 2


def test_every_entry_point_rejects_a_bad_constraint_at_submission(engines):
    """generate, stream and search all compile on the caller's thread: the error comes before
    anything is posted to the loop (a stream raises when it is created, not when iterated)."""
    eng = engines["outlines"]
    bad = SamplingParams(structured_outputs=S(grammar="start: 'a'"))
    with pytest.raises(ValueError, match="llguidance"):
        eng.stream(PROMPT, bad)
    with pytest.raises(ValueError, match="llguidance"):
        eng.search(bad)
    with pytest.raises(ValueError, match="llguidance"):
        asyncio.run(eng.agenerate(PROMPT, bad))


def test_cancelling_a_constrained_extend_releases_everything(engines):
    eng = engines[DEFAULT_BACKEND]
    params = SamplingParams(max_tokens=200, structured_outputs=S(regex=r"[0-9]{200}"))

    async def run():
        async with eng.search(params, seed=0) as ctx:
            root = ctx.root(PROMPT)
            task = asyncio.ensure_future(ctx.extend(ctx.fork(root, 4)))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            (done,) = await ctx.extend([root], max_tokens=3)  # the context still works
            return ctx.text(done)

    assert re.fullmatch(r"[0-9]{3}", asyncio.run(run()))
