"""VLLMBackend: ponder's searches on vLLM's async engine, in process (implicit mode).

    backend = VLLMBackend()                      # the embedded model, prefix caching on
    result = await run(backend, "particle", SearchRequest(prompt=..., n=16, verifier=v))

Every search's extend calls become `AsyncLLM.generate` requests with `TokensPrompt` (token
ids, never re-templated text), so many concurrent searches share vLLM's continuous batching,
and automatic prefix caching serves every branch's prefix (engine/implicit.py). The AsyncLLM
lives on an event loop of its own, in a thread: its output handler is bound to the loop it
first ran on, and ponder's callers (`ponder eval`, `search_batch`) each open a fresh loop.

vLLM is optional and pins transformers < 5.20, so it lives in its own virtual environment
(README, "Backends"); importing this module does not import vLLM, creating a backend does.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
from pathlib import Path

from ponder.engine.implicit import GenerateCall, Generation, ImplicitBackend, Sample

# vLLM's CPU backend rejects KV blocks that are not a multiple of 32, and its default (128)
# would keep every prompt shorter than 128 tokens out of the prefix cache.
DEFAULT_BLOCK_SIZE = 32


class VLLMBackend(ImplicitBackend):
    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        gpu_memory_utilization: float = 0.2,
        dtype: str = "float32",
        enforce_eager: bool = True,
        max_model_len: int | None = None,
        **engine_args,
    ):
        super().__init__(model_path)
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        config = json.loads((self.model_path / "config.json").read_text())
        limit = int(config.get("max_position_embeddings", 2048))
        self.max_model_len = min(max_model_len or limit, limit)
        args = AsyncEngineArgs(
            model=str(self.model_path),
            enable_prefix_caching=True,
            block_size=block_size,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            enforce_eager=enforce_eager,
            max_model_len=self.max_model_len,
            disable_log_stats=True,
            **engine_args,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="vllm")
        self._thread.start()
        self.engine = self._on_loop(_create(AsyncLLM, args)).result()
        self._request_ids = itertools.count()

    async def generate(self, call: GenerateCall) -> Generation:
        future = self._on_loop(self._generate(call, f"ponder-{next(self._request_ids)}"))
        return await asyncio.wrap_future(future)

    async def _generate(self, call: GenerateCall, request_id: str) -> Generation:
        from vllm import SamplingParams, TokensPrompt
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        p = call.params
        structured = None
        if p.structured_outputs is not None:  # same names: vLLM compiles and applies it
            structured = StructuredOutputsParams(**p.structured_outputs.to_vllm())
        params = SamplingParams(
            n=call.n,
            temperature=p.temperature,
            top_p=p.top_p,
            top_k=p.top_k,
            min_p=p.min_p,
            max_tokens=call.max_tokens,
            stop=list(call.stop),
            stop_token_ids=list(p.stop_token_ids),
            ignore_eos=p.ignore_eos,
            seed=call.seed,
            logprobs=0,  # the sampled token's logprob: ponder's cumulative_logprob
            output_kind=RequestOutputKind.FINAL_ONLY,
            structured_outputs=structured,
        )
        prompt = TokensPrompt(prompt_token_ids=list(call.prompt_ids))
        final = None
        async for output in self.engine.generate(prompt, params, request_id):
            final = output
        if final is None:
            raise RuntimeError(f"vLLM returned nothing for request {request_id}")
        return to_generation(final)

    def _on_loop(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._on_loop(_shutdown(self.engine)).result()
        self.engine = None  # AsyncLLM.__del__ shuts down again: let it run now, not at exit
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


async def _create(cls, args):
    return cls.from_engine_args(args)


async def _shutdown(engine) -> None:
    """Stop the engine, then cancel what it left on its loop (its output handler)."""
    engine.shutdown()
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def to_generation(output) -> Generation:
    """ponder's Generation of a finished vLLM RequestOutput (samples in index order)."""
    samples = []
    for completion in sorted(output.outputs, key=lambda c: c.index):
        token_ids = tuple(completion.token_ids)
        logprobs = ()
        if completion.logprobs is not None:
            logprobs = tuple(
                position[token].logprob
                for token, position in zip(token_ids, completion.logprobs, strict=False)
            )
        reason = completion.finish_reason or "length"
        samples.append(Sample(token_ids, reason, completion.stop_reason, logprobs))
    return Generation(samples, output.num_cached_tokens)
