"""The SGLang backend's mapping (request parameters, n per distinct input, EOS vs stop string
vs length, logprobs, cached tokens) against a fake of SGLang's documented
`Engine.async_generate(input_ids=..., sampling_params=..., return_logprob=True)`. SGLang itself
cannot run on these CPU-only machines; nothing here starts it."""

from __future__ import annotations

import asyncio

from ponder.engine.sampling_params import SamplingParams
from ponder.engine.sglang_backend import SGLangBackend
from ponder.strategies import SearchRequest, run
from ponder.tasks.registry import get_task, make_verifier

EOS = 2  # the embedded model's


class FakeSGLangEngine:
    """Answers every request with the same solution, one line per step, as SGLang shapes it:
    a dict for n == 1, a list for n > 1; EOS reported as matched=<eos id>."""

    def __init__(self, tokenizer, solution: str):
        self.tokenizer, self.solution, self.calls = tokenizer, solution, []

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    async def async_generate(self, *, input_ids, sampling_params, return_logprob=False):
        self.calls.append((list(input_ids), dict(sampling_params)))
        done = self.tokenizer.decode(input_ids, skip_special_tokens=True)
        rest = self.solution[len(done.split("\n", 1)[1]) if "\n" in done else 0 :]
        stop = sampling_params["stop"]
        cut = min((rest.index(s) + len(s) for s in stop if s in rest), default=None)
        text = rest if cut is None else rest[:cut]
        output_ids = self.ids(text)
        finish = {"type": "stop", "matched": stop[0] if cut is not None else EOS}
        if cut is None:
            output_ids.append(EOS)
        if len(output_ids) > sampling_params["max_new_tokens"]:
            output_ids = output_ids[: sampling_params["max_new_tokens"]]
            finish = {"type": "length", "length": len(output_ids)}
        one = {
            "text": text,
            "output_ids": output_ids,
            "meta_info": {
                "finish_reason": finish,
                "prompt_tokens": len(input_ids),
                "cached_tokens": len(input_ids) - 1,
                "output_token_logprobs": [(-0.5, t, None) for t in output_ids],
            },
        }
        n = sampling_params["n"]
        return one if n == 1 else [dict(one) for _ in range(n)]


def make_backend(solution="3+4=7\nA: 7"):
    backend = SGLangBackend(engine=object())
    backend.engine = FakeSGLangEngine(backend.tokenizer, solution)
    return backend


def test_mapping_of_requests_and_outputs():
    backend = make_backend()
    fake = backend.engine

    async def go():
        async with backend.search(SamplingParams(temperature=0.7, top_k=0), seed=4) as ctx:
            root = ctx.root("Q: 3+4\n")
            kids = await ctx.extend(ctx.fork(root, 3), stop=["\n"], max_tokens=20)
            assert len(fake.calls) == 1
            ids, params = fake.calls[0]
            assert ids == list(ctx.tokens(root)) and params["n"] == 3
            assert params["top_k"] == -1 and params["temperature"] == 0.7
            assert params["stop"] == ["\n"] and params["max_new_tokens"] == 20
            assert "sampling_seed" in params
            assert [ctx.text(k) for k in kids] == ["3+4=7\n"] * 3
            assert all(k.finish_reason == "stop" and ctx.stop_reason(k) == "\n" for k in kids)
            assert kids[0].cumulative_logprob == -0.5 * kids[0].num_generated
            (end,) = await ctx.extend([kids[0]], stop=["\n"], max_tokens=20)
            assert end.finish_reason == "eos" and ctx.stop_reason(end) is None
            assert ctx.text(end) == "3+4=7\nA: 7"
            (cut,) = await ctx.extend([root], stop=[], max_tokens=2)
            assert cut.finish_reason == "length" and cut.num_generated == 2
            stats = ctx.stats
            assert stats.samples == 5 and stats.extend_calls == 3
            assert stats.computed_prompt_tokens == 1  # the fake says all but one were cached
            assert stats.cached_prompt_tokens == sum(len(i) - 1 for i, _ in fake.calls)

    asyncio.run(go())


def test_greedy_sends_no_seed_and_bon_runs():
    backend = make_backend()
    task = get_task("arith", level=1)
    request = SearchRequest(
        prompt="Q: 3+4\n",
        verifier=make_verifier("arith_outcome"),
        n=4,
        temperature=0.0,
        extract_answer=task.extract_answer,
        reference="7",
    )
    result = asyncio.run(run(backend, "bon", request))
    assert result.answer == "7" and result.stats["samples"] == 4
    assert all("sampling_seed" not in params for _, params in backend.engine.calls)


def test_constraints_in_sglang_names():
    import pytest
    from ponder.engine.sglang_backend import sglang_constraint
    from ponder.engine.structured import StructuredOutputsParams as S

    assert sglang_constraint(S(json={"type": "integer"})) == {"json_schema": '{"type":"integer"}'}
    assert sglang_constraint(S(choice=["a", "b"])) == {"regex": "(a|b)"}
    assert sglang_constraint(S(regex="[0-9]+")) == {"regex": "[0-9]+"}
    with pytest.raises(ValueError, match="EBNF"):
        sglang_constraint(S(grammar="start: 'a'"))
