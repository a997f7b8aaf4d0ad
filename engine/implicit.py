"""ImplicitContext: the SearchContext verbs on an engine that keeps its own prefix cache.

vLLM, SGLang and any OpenAI-compatible server run in "implicit" mode (DESIGN.md, boundary 4):
ponder holds no KV. A branch is its token ids; `fork` copies ids; `extend` sends the full token
ids of each distinct input as one generate request (identical inputs, e.g. the n forks of a
root, go as one request with `n`), and the engine's automatic prefix cache finds the KV of
everything it computed before, so only the last partial block is computed again. `release` is
a no-op: the engine evicts cached blocks by itself. Prompts and branches are token ids,
never re-templated text, so what the engine sees is exactly what the strategy built.

A backend supplies one coroutine, `generate(call) -> Generation`, and the tokenizer; this
module does the rest (grouping, seeds, finish reasons, accounting). It deliberately knows
nothing about any engine's API.

Constrained output: `params.structured_outputs` goes with each call (the engine compiles and
applies it). The engine starts the grammar at the start of each request's output, and holds no
state between requests, so only branches with no generated tokens (roots and their forks) can
be extended under a constraint: a search with one must sample whole solutions (bon, majority,
sample); step-level strategies carry the grammar state on ponder's own engine only.

Accounting: a root's first submission counts its prompt as computed (minus what the engine's
cache served); every later submission's uncached tokens are `recomputed_tokens`, the cost of
implicit mode that the own engine's explicit forks do not pay.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import itertools
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ponder.engine.outputs import CompletionOutput, RequestOutput
from ponder.engine.protocol import Branch, SearchContext, SearchStats
from ponder.engine.sampling_params import SamplingParams, check_stop_strings


@dataclass(frozen=True, slots=True)
class GenerateCall:
    """One request to the engine: n samples continuing `prompt_ids`."""

    prompt_ids: tuple[int, ...]
    n: int
    params: SamplingParams  # temperature, top_p, top_k, min_p, stop_token_ids, ignore_eos
    stop: tuple[str, ...]
    max_tokens: int
    seed: int | None  # the engine derives the n samples' seeds from it (vLLM: seed + index)


@dataclass(frozen=True, slots=True)
class Sample:
    """One generated continuation, as every engine reports it."""

    token_ids: tuple[int, ...]  # generated tokens only (EOS included when the engine keeps it)
    finish_reason: str  # the engine's: "stop" (EOS, stop string, stop token) or "length"
    stop_reason: int | str | None = None  # the stop string or token id; None for EOS or length
    logprobs: tuple[float, ...] = ()  # of each generated token, when the engine returned them

    @property
    def cumulative_logprob(self) -> float:
        return sum(self.logprobs)


@dataclass(frozen=True, slots=True)
class Generation:
    samples: list[Sample]
    num_cached_tokens: int | None = None  # prompt tokens the engine's cache served; None: unknown


class Generator(Protocol):
    async def generate(self, call: GenerateCall) -> Generation: ...


def finish_reason(sample: Sample, total_length: int, max_model_len: int) -> str:
    """ponder's finish reason ("eos", "stop", "length", "max_model_len") of an engine's."""
    if sample.finish_reason == "stop":
        return "eos" if sample.stop_reason is None else "stop"
    if total_length >= max_model_len:
        return "max_model_len"
    return "length"


def call_seed(seed: int, draw: int) -> int:
    """The seed of the draw-th generate call of a search seeded `seed` (31 bits: every server
    takes it, and vLLM adds the sample index to it)."""
    digest = hashlib.blake2b(f"{seed}:{draw}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x3FFF_FFFF


class ImplicitBackend(abc.ABC):
    """What the implicit backends share: the tokenizer (text <-> ids, chat template) and
    `search`. A subclass sets `max_model_len` and implements `generate`."""

    max_model_len: int

    def __init__(self, model_path: str | Path | None):
        from ponder import embedded
        from transformers import AutoTokenizer

        self.model_path = Path(model_path) if model_path is not None else embedded.model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self._seeds = random.Random()

    @abc.abstractmethod
    async def generate(self, call: GenerateCall) -> Generation:
        """Sample `call.n` continuations of `call.prompt_ids` on the engine."""

    def encode(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(text).input_ids)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def chat_prompt(self, message: str) -> tuple[int, ...]:
        if not self.has_chat_template:
            raise ValueError(f"the model at {self.model_path} has no chat template")
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], add_generation_prompt=True, tokenize=False
        )
        return tuple(self.tokenizer(text, add_special_tokens=False).input_ids)

    def search(
        self,
        params: SamplingParams | None = None,
        *,
        seed: int | None = None,
        question: str | None = None,
    ) -> ImplicitContext:
        seed = self._seeds.getrandbits(63) if seed is None else seed
        return ImplicitContext(self, params, seed=seed, question=question)

    async def agenerate(self, prompt, params: SamplingParams | None = None) -> RequestOutput:
        """n samples of one prompt, shaped as Engine.agenerate returns them (for `ponder
        signals` and servers): one request with n, through a context like any search."""
        params = params or SamplingParams()
        async with self.search(params, seed=params.seed) as ctx:
            root = ctx.root(prompt)
            branches = await ctx.extend([root] * params.n, release_inputs=False)
            outputs = [
                CompletionOutput(
                    index,
                    self.decode(ctx.tokens(b)[b.prompt_length :]),
                    ctx.tokens(b)[b.prompt_length :],
                    b.cumulative_logprob,
                    None,
                    "stop" if b.finish_reason in ("eos", "stop") else "length",
                    ctx.stop_reason(b),
                )
                for index, b in enumerate(branches)
            ]
            prompt_ids = ctx.tokens(root)
        return RequestOutput(
            request_id=f"implicit-{id(ctx)}",
            prompt=prompt if isinstance(prompt, str) else None,
            prompt_token_ids=prompt_ids,
            outputs=outputs,
            num_cached_tokens=ctx.stats.cached_prompt_tokens,
            metrics=ctx.stats.as_dict(),
        )

    def close(self) -> None:  # noqa: B027 (optional hook: most engines hold nothing to close)
        """Release the engine's resources; the base holds none."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ImplicitContext(SearchContext):
    def __init__(
        self,
        backend: ImplicitBackend,
        params: SamplingParams | None = None,
        *,
        seed: int = 0,
        question: str | None = None,
    ):
        self.backend = backend
        self.params = params or SamplingParams()
        self.seed = seed
        self.question = question
        self.stats = SearchStats()
        self._tokens: dict[int, tuple[int, ...]] = {}
        self._logprobs: dict[int, tuple[float, ...]] = {}
        self._stop_reasons: dict[int, int | str | None] = {}
        self._submitted_roots: set[tuple[int, ...]] = set()  # prompts counted as computed
        self._ids = itertools.count()
        self._draws = itertools.count()
        self._closed = False

    # ------------------------------------------------------------------ verbs

    def root(self, prompt: str | Sequence[int]) -> Branch:
        self._check_open()
        ids = self.backend.encode(prompt) if isinstance(prompt, str) else tuple(prompt)
        if not ids or prompt == "":  # "" encodes to (BOS,) with some tokenizers
            raise ValueError("the prompt is empty")
        if len(ids) >= self.backend.max_model_len:
            raise ValueError(
                f"the prompt has {len(ids)} tokens; this model takes at most "
                f"{self.backend.max_model_len - 1} so that at least one can be generated"
            )
        branch = Branch(next(self._ids), None, len(ids), len(ids))
        self._tokens[branch.id] = ids
        self.stats.prompt_tokens += len(ids)
        return branch

    def fork(self, branch: Branch, n: int) -> list[Branch]:
        if n < 1:
            raise ValueError(f"fork needs n >= 1, got {n}")
        ids = self._get(branch)
        kids = [branch.child(next(self._ids)) for _ in range(n)]
        for kid in kids:
            self._tokens[kid.id] = ids
            self._logprobs[kid.id] = self._logprobs.get(branch.id, ())
            self._stop_reasons[kid.id] = self._stop_reasons.get(branch.id)
        return kids

    async def extend(
        self,
        branches: Sequence[Branch],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
        release_inputs: bool = False,
    ) -> list[Branch]:
        if not branches:
            return []
        self._check_extend(branches, max_tokens)
        stops = self.params.stop if stop is None else check_stop_strings(stop, "extend(stop=...)")
        self.stats.extend_calls += 1
        # 1. Group identical inputs (same token ids): one request with n for each group.
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, b in enumerate(branches):
            groups.setdefault(self._tokens[b.id], []).append(index)
        budget = self.params.max_tokens if max_tokens is None else max_tokens
        calls = [
            GenerateCall(
                prompt_ids=ids,
                # Greedy samples of one input are identical (and vLLM refuses n > 1 without
                # sampling): ask once, hand the sample to every member.
                n=1 if self.params.greedy else len(members),
                params=self.params,
                stop=tuple(stops),
                max_tokens=max(1, min(budget, self.backend.max_model_len - len(ids))),
                seed=None if self.params.greedy else call_seed(self.seed, next(self._draws)),
            )
            for ids, members in groups.items()
        ]
        # 2. Send them together, so the engine batches them.
        generations = await asyncio.gather(*(self.backend.generate(c) for c in calls))
        # 3. Hand the samples back in input order and count what the engine did.
        out: list[Branch | None] = [None] * len(branches)
        for call, members, generation in zip(calls, groups.values(), generations, strict=True):
            if len(generation.samples) != call.n:
                raise RuntimeError(
                    f"the engine returned {len(generation.samples)} samples for n={call.n}"
                )
            self._count_prompt(call.prompt_ids, branches[members[0]], generation)
            samples = generation.samples * (len(members) // call.n)
            for index, sample in zip(members, samples, strict=True):
                out[index] = self._adopt(branches[index], sample)
        if release_inputs:
            self.release(branches)
        return [b for b in out if b is not None]

    def _check_extend(self, branches: Sequence[Branch], max_tokens: int | None) -> None:
        """ValueError for a released, finished or (under a constraint) grown branch, or a bad
        max_tokens, before anything is sent."""
        for b in branches:
            self._get(b)
            if b.done:
                raise ValueError(
                    f"branch {b.id} is done ({b.finish_reason}); it cannot be extended"
                )
            if self.params.structured_outputs is not None and b.num_generated:
                raise ValueError(
                    f"branch {b.id} has generated tokens: an implicit backend restarts the "
                    "grammar with every request, so a constrained search here must sample "
                    "whole solutions (bon, majority, sample); use the torch backend for "
                    "step-level strategies under a constraint"
                )
        if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
            raise ValueError(f"max_tokens must be an int >= 1 or None, got {max_tokens!r}")

    def release(self, branches: Iterable[Branch]) -> None:
        """Forget the branches' ids; the engine's cache evicts their KV on its own."""
        for b in branches:
            self._tokens.pop(b.id, None)
            self._logprobs.pop(b.id, None)
            self._stop_reasons.pop(b.id, None)

    def live_branches(self) -> int:
        return len(self._tokens)

    def tokens(self, branch: Branch) -> tuple[int, ...]:
        return self._get(branch)

    def text(self, branch: Branch) -> str:
        return self.backend.decode(self._get(branch)[branch.prompt_length :])

    def prompt_text(self, branch: Branch) -> str:
        if self.question is not None:
            return self.question
        return self.backend.decode(self._get(branch)[: branch.prompt_length])

    def logprobs(self, branch: Branch) -> tuple[float, ...]:
        """Logprobs of the tokens sampled by the extend call that produced this branch."""
        self._get(branch)
        return self._logprobs.get(branch.id, ())

    def stop_reason(self, branch: Branch) -> int | str | None:
        self._get(branch)
        return self._stop_reasons.get(branch.id)

    def close(self) -> None:
        self._tokens.clear()
        self._logprobs.clear()
        self._stop_reasons.clear()
        self._closed = True
        if self.stats.finished is None:
            self.stats.finished = time.perf_counter()

    # ------------------------------------------------------------------ internals

    def _adopt(self, parent: Branch, sample: Sample) -> Branch:
        ids = self._tokens[parent.id] + sample.token_ids
        branch = Branch(
            next(self._ids),
            parent.id,
            len(ids),
            parent.prompt_length,
            parent.cumulative_logprob + sample.cumulative_logprob,
            finish_reason(sample, len(ids), self.backend.max_model_len),
        )
        self._tokens[branch.id] = ids
        self._logprobs[branch.id] = sample.logprobs
        self._stop_reasons[branch.id] = sample.stop_reason
        self.stats.generated_tokens += len(sample.token_ids)
        self.stats.samples += 1
        return branch

    def _count_prompt(self, ids: tuple[int, ...], first: Branch, generation: Generation) -> None:
        """A root's first submission computes its prompt; later ones recompute what the
        engine's cache missed (the last partial block, with prefix caching on)."""
        cached = min(generation.num_cached_tokens or 0, len(ids))
        self.stats.cached_prompt_tokens += cached
        if first.length == first.prompt_length and ids not in self._submitted_roots:
            self._submitted_roots.add(ids)
            self.stats.computed_prompt_tokens += len(ids) - cached
        else:
            self.stats.recomputed_tokens += len(ids) - cached

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this search context is closed")

    def _get(self, branch: Branch) -> tuple[int, ...]:
        self._check_open()
        ids = self._tokens.get(branch.id)
        if ids is None:
            raise ValueError(f"branch {branch.id} is unknown to this context or was released")
        return ids
