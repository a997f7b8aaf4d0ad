"""Engine: the public entry point of ponder's own torch backend.

    engine = Engine.from_pretrained()                 # the embedded arith model
    outs = engine.generate(["Q: 1+2\\n"], SamplingParams(n=16, stop=["\\n"]))
    async with engine.search(SamplingParams(temperature=0.8), seed=0) as ctx: ...

It loads a Hugging Face checkpoint into ponder's paged model, sizes the KV pool, and starts the
engine loop thread. `generate` is plain batched sampling (n samples of a prompt share its KV);
`search` opens a SearchContext for strategies; `agenerate` is the async form a server uses. All
of them feed the same scheduler, so concurrent callers share forward passes. Text goes in and out
here (the tokenizer lives here); below this layer everything is token ids.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import torch
from ponder import embedded
from ponder.engine.outputs import RequestOutput
from ponder.engine.sampling_params import SamplingParams
from ponder.engine.structured.compiler import DEFAULT_BACKEND, GrammarCompiler
from ponder.engine.torch_backend import commands as cmd
from ponder.engine.torch_backend import requests
from ponder.engine.torch_backend.context import EngineContext
from ponder.engine.torch_backend.core import EngineCore
from ponder.engine.torch_backend.kv_cache import BlockManager, KVStats
from ponder.engine.torch_backend.loop import EngineLoop
from ponder.engine.torch_backend.model import CausalLM
from ponder.engine.torch_backend.model_runner import ModelRunner
from ponder.engine.torch_backend.threads import off_caller_thread
from transformers import AutoTokenizer

Prompt = str | Sequence[int]


class Engine:
    def __init__(
        self,
        model_path: str | Path,
        *,
        block_size: int = 16,
        num_blocks: int | None = None,
        kv_cache_gb: float = 1.0,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int = 4096,
        max_model_len: int | None = None,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        threads: int | None = None,
        structured_backend: str = DEFAULT_BACKEND,
        cuda_graphs: bool = True,
        fused_kernels: bool = False,
        cpu_kernel: bool = True,
    ):
        self.model_path = Path(model_path)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        model = off_caller_thread(
            CausalLM.from_pretrained, self.model_path, dtype=dtype, device=self.device
        )
        if fused_kernels:
            if self.device.type != "cuda" or importlib.util.find_spec("triton") is None:
                raise ValueError("fused_kernels=True needs a CUDA device and Triton installed")
            model.use_triton()
        config = json.loads((self.model_path / "config.json").read_text())
        limit = int(config.get("max_position_embeddings", 2048))
        self.max_model_len = min(max_model_len or limit, limit)
        self.eos_token_ids = self._eos_ids(config)
        if num_blocks is None:
            per_block = ModelRunner.bytes_per_block(model.config, block_size, dtype)
            num_blocks = max(int(kv_cache_gb * 2**30 // per_block), 1)
        self.blocks = BlockManager(num_blocks, block_size)
        self.grammars = GrammarCompiler(  # builds nothing until a request is constrained
            self.tokenizer,
            vocab_size=model.config.vocab_size,
            eos_ids=self.eos_token_ids,
            backend=structured_backend,
        )
        runner = off_caller_thread(
            ModelRunner,
            model,
            num_blocks=num_blocks,
            block_size=block_size,
            max_num_seqs=max_num_seqs,
            cuda_graphs=cuda_graphs,
            cpu_kernel=cpu_kernel,
        )
        self.core = EngineCore(
            runner,
            self.blocks,
            self.decode,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            max_model_len=self.max_model_len,
        )
        self.loop = EngineLoop(self.core, threads=threads)
        self._ids = itertools.count()  # handle and owner ids (next() on a count is atomic)
        self._request_ids = itertools.count()
        self._seeds = random.Random()

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, **options) -> Engine:
        """Load a Hugging Face folder; `None` loads the embedded arith model (ponder.embedded)."""
        if path is None:
            path = embedded.model_path()
        if not (Path(path) / "config.json").is_file():
            raise ValueError(f"{path} is not a Hugging Face model folder (no config.json)")
        return cls(path, **options)

    # ------------------------------------------------------------------ text <-> ids

    def encode(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(text).input_ids)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def chat_prompt(self, message: str) -> tuple[int, ...]:
        """Token ids of `message` as one user turn in the model's chat template, ready for the
        assistant's reply. The template writes its own special tokens, so none are added twice.
        ValueError when the model has no chat template."""
        if not self.has_chat_template:
            raise ValueError(f"the model at {self.model_path} has no chat template")
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], add_generation_prompt=True, tokenize=False
        )
        return tuple(self.tokenizer(text, add_special_tokens=False).input_ids)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def prompt_ids(self, prompt: str | Sequence[int]) -> tuple[int, ...]:
        """A prompt's token ids, validated (ValueError naming what is wrong)."""
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("the prompt is empty")
            ids = self.encode(prompt)
        elif isinstance(prompt, bytes) or not isinstance(prompt, Sequence):
            raise ValueError(f"a prompt is a string or a list of token ids, got {prompt!r:.80}")
        else:
            ids = tuple(prompt)
            bad = [t for t in ids if not isinstance(t, int) or isinstance(t, bool)]
            if bad:
                raise ValueError(f"prompt token ids must be ints, got {bad[:5]!r}")
        self.check_prompt(ids)
        return ids

    def check_prompt(self, token_ids: Sequence[int]) -> None:
        if not token_ids:
            raise ValueError("the prompt is empty")
        if len(token_ids) >= self.max_model_len:
            raise ValueError(
                f"the prompt has {len(token_ids)} tokens; this model takes at most "
                f"{self.max_model_len - 1} so that at least one can be generated"
            )
        vocab = self.core.runner.vocab_size
        bad = [t for t in token_ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt token ids {bad[:5]} are outside the vocabulary [0, {vocab})")

    # ------------------------------------------------------------------ state

    @property
    def kv_stats(self) -> KVStats:
        """Blocks total / in use / cached-free, after every command posted before (never
        hangs: after close, or if the loop does not answer, the last known state)."""
        return self.loop.snapshot().kv

    @property
    def live_handles(self) -> int:
        """Branches alive in the engine core, of every search and request (leak check: 0)."""
        return self.loop.snapshot().live_handles

    def update_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Load a Hugging Face state dict into the running model (on the loop thread, between
        steps) and drop the prefix cache, whose blocks hold KV of the old weights. Atomic:
        every name and shape is checked before any parameter changes (ValueError naming the
        missing or mismatched tensor). For RL loops that train a `transformers` model and sample
        with this engine; the engine must be idle (no running request or open search), else
        RuntimeError and nothing changes."""
        command = cmd.UpdateWeights(weights)
        self.loop.post(command)
        command.reply.result()

    def reset_prefix_cache(self) -> int:
        """Drop the cached content of free KV blocks (on the loop thread, between steps), e.g.
        after changing the model's weights in place; returns the number of blocks dropped."""
        command = cmd.ResetPrefixCache()
        self.loop.post(command)
        return command.reply.result()

    @property
    def closed(self) -> bool:
        return self.loop.closed

    def next_id(self) -> int:
        """A fresh id for a branch handle or an owner (unique in this engine)."""
        return next(self._ids)

    def close(self) -> None:
        self.loop.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ searching

    def search(
        self,
        params: SamplingParams | None = None,
        *,
        seed: int | None = None,
        question: str | None = None,
    ):
        """A SearchContext on this engine; use it as `async with` or `with` to release all.

        `question` is what verifiers see as the prompt (e.g. the user message before the chat
        template wrapped it); by default they see the decoded prompt tokens."""
        seed = self._seeds.getrandbits(63) if seed is None else seed
        return EngineContext(self, params, seed=seed, question=question)

    # ------------------------------------------------------------------ plain sampling

    def generate(
        self, prompts: Prompt | Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[RequestOutput]:
        """n samples per prompt, all prompts batched together; one RequestOutput per prompt."""
        batch = _as_prompt_list(prompts)
        params = params or SamplingParams()

        async def run_all() -> list[RequestOutput]:
            return list(await asyncio.gather(*(self.agenerate(p, params) for p in batch)))

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(run_all())
        raise RuntimeError("Engine.generate was called inside an event loop; await agenerate")

    async def agenerate(
        self, prompt: Prompt, params: SamplingParams | None = None, request_id: str | None = None
    ) -> RequestOutput:
        """One request, awaited whole. Cancelling the await aborts it and frees its blocks."""
        params = self._check_params(params)
        request_id = request_id or f"req-{next(self._request_ids)}"
        return await requests.generate_one(self, prompt, params, request_id)

    def stream(
        self, prompt: Prompt, params: SamplingParams | None = None, request_id: str | None = None
    ) -> AsyncIterator[RequestOutput]:
        """One request, streamed: `async for out in engine.stream(...)` yields RequestOutputs
        in delta mode (new tokens and text per completion; `finished` on the last). Leaving
        the loop early aborts the request and frees its blocks (torch_backend/requests.py)."""
        params = self._check_params(params)
        request_id = request_id or f"req-{next(self._request_ids)}"
        return requests.stream(self, prompt, params, request_id)

    def _check_params(self, params) -> SamplingParams:
        """Validate a request's params; a constraint is compiled here, on the caller's thread
        (cached), so one the backend rejects is a ValueError now, before a stream starts."""
        if params is None:
            return SamplingParams()
        if not isinstance(params, SamplingParams):
            raise ValueError(f"params must be a SamplingParams, got {type(params).__name__}")
        if params.structured_outputs is not None:
            self.grammars.compile(params.structured_outputs)
        return params

    def _eos_ids(self, config: dict) -> frozenset[int]:
        """EOS ids from config.json, generation_config.json and the tokenizer, merged."""
        ids: set[int] = set()
        generation = self.model_path / "generation_config.json"
        sources = [config, json.loads(generation.read_text()) if generation.is_file() else {}]
        for source in sources:
            eos = source.get("eos_token_id")
            ids.update([eos] if isinstance(eos, int) else (eos or []))
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return frozenset(ids)


def _as_prompt_list(prompts) -> list[Prompt]:
    if isinstance(prompts, str):
        return [prompts]
    prompts = list(prompts)
    if prompts and all(isinstance(t, int) for t in prompts):
        return [prompts]  # a single token-id prompt
    return prompts
