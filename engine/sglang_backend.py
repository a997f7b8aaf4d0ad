"""SGLangBackend: ponder's searches on SGLang's offline Engine, in process (implicit mode).

    backend = SGLangBackend("path/to/model")     # radix cache on (SGLang's default)
    result = await run(backend, "beam", SearchRequest(prompt=..., n=16, verifier=v))

Every distinct branch of an extend becomes one `Engine.async_generate(input_ids=[...],
sampling_params={..., "n": k})` call (engine/implicit.py), so SGLang's radix cache serves
the shared prefixes token-exactly. What SGLang returns per sample (its documented shape):

    {"text": str, "output_ids": [int, ...],
     "meta_info": {"finish_reason": {"type": "stop" | "length", "matched": int | str | None},
                   "prompt_tokens": int, "cached_tokens": int,
                   "output_token_logprobs": [(logprob, token_id, text), ...]}}   # return_logprob

a dict for n == 1 and a list of them for n > 1. SGLang reports EOS as a "stop" whose `matched`
is the EOS token id, where vLLM says None; `to_sample` maps both to ponder's "eos".

SGLang cannot run on these CPU-only machines (README, "Backends"): this mapping is tested
against a fake of that API (tests/test_sglang_backend.py), never against SGLang itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from ponder.engine.implicit import GenerateCall, Generation, ImplicitBackend, Sample


class SGLangBackend(ImplicitBackend):
    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        engine=None,
        max_model_len: int | None = None,
        **engine_args,
    ):
        """`engine`: a ready sglang.Engine (or a fake with its API); else one is started with
        `engine_args` (e.g. mem_fraction_static, tp_size)."""
        super().__init__(model_path)
        config = json.loads((self.model_path / "config.json").read_text())
        limit = int(config.get("max_position_embeddings", 2048))
        self.max_model_len = min(max_model_len or limit, limit)
        self.eos_token_ids = _eos_ids(config, self.tokenizer)
        if engine is None:
            import sglang

            engine = sglang.Engine(model_path=str(self.model_path), **engine_args)
        self.engine = engine

    async def generate(self, call: GenerateCall) -> Generation:
        p = call.params
        params = {
            "n": call.n,
            "max_new_tokens": call.max_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "top_k": p.top_k or -1,
            "min_p": p.min_p,
            "stop": list(call.stop),
            "stop_token_ids": list(p.stop_token_ids),
            "ignore_eos": p.ignore_eos,
            "no_stop_trim": True,  # keep the stop string in the text, as ponder's branches do
        }
        if p.structured_outputs is not None:
            params.update(sglang_constraint(p.structured_outputs))
        if call.seed is not None:
            params["sampling_seed"] = call.seed  # SGLang >= 0.5; n samples draw in turn
        out = await self.engine.async_generate(
            input_ids=list(call.prompt_ids), sampling_params=params, return_logprob=True
        )
        outputs = out if isinstance(out, list) else [out]
        samples = [self.to_sample(o, p.stop_token_ids) for o in outputs]
        # Every sample of the request shares the prompt: the first one's cache hit is the
        # request's (the others hit the prefix the first one just computed).
        cached = outputs[0].get("meta_info", {}).get("cached_tokens") if outputs else None
        return Generation(samples, cached)

    def to_sample(self, output: dict, stop_token_ids=()) -> Sample:
        meta = output.get("meta_info", {})
        finish = meta.get("finish_reason") or {"type": "length"}
        matched = finish.get("matched")
        reason = "stop" if finish.get("type") in ("stop", "abort") else "length"
        if isinstance(matched, int) and matched in self.eos_token_ids - set(stop_token_ids):
            matched = None  # EOS, as vLLM reports it
        logprobs = tuple(entry[0] for entry in meta.get("output_token_logprobs") or ())
        return Sample(tuple(output["output_ids"]), reason, matched, logprobs)

    def close(self) -> None:
        shutdown = getattr(self.engine, "shutdown", None)
        if shutdown is not None:
            shutdown()


def _eos_ids(config: dict, tokenizer) -> frozenset[int]:
    eos = config.get("eos_token_id")
    ids = set([eos] if isinstance(eos, int) else (eos or []))
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return frozenset(ids)


def sglang_constraint(constraint) -> dict:
    """A StructuredOutputsParams in SGLang's sampling_params names (json_schema, regex)."""
    from ponder.engine.structured.patterns import choice_regex

    kind = constraint.kind
    if kind == "json":
        return {"json_schema": constraint.json}
    if kind == "json_object":
        return {"json_schema": '{"type": "object"}'}
    if kind == "regex":
        return {"regex": constraint.regex}
    if kind == "choice":
        return {"regex": choice_regex(constraint.choice)}
    raise ValueError(
        "the SGLang backend takes json, json_object, regex and choice constraints: ponder's "
        "grammar is Lark text (llguidance), SGLang reads EBNF"
    )
