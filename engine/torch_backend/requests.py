"""Requests: plain sampling on the engine, whole (`agenerate`) or streamed (`stream`).

A request is a one-extend search: its prompt becomes a root, `n` draws continue it (sharing the
prompt's KV), and the results become vLLM-shaped RequestOutputs. `stream` yields deltas as
tokens are sampled (the shape of vLLM's `AsyncLLM.generate` with delta output): each
RequestOutput holds the completions that advanced, with their new token ids and text, and the
last one has `finished=True` and the request's accounting in `metrics`. Leaving the iterator
early (break, an exception, or cancelling the task) aborts the request and frees its blocks.
Text held back: while a completion runs, the last `len(longest stop string) - 1` characters
are not emitted yet, so a stop string that is not to be included never leaks out in pieces.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from ponder.engine.outputs import CompletionOutput, Logprob, RequestOutput
from ponder.engine.protocol import Branch, openai_finish_reason
from ponder.engine.sampling_params import SamplingParams
from ponder.engine.torch_backend.commands import TokenDelta
from ponder.engine.torch_backend.context import EngineContext

if TYPE_CHECKING:
    from ponder.engine.torch_backend.engine import Engine

Prompt = str | Sequence[int]
_END = object()


async def generate_one(
    engine: Engine, prompt: Prompt, params: SamplingParams, request_id: str
) -> RequestOutput:
    async with engine.search(params, seed=params.seed) as ctx:
        root = ctx.root(prompt)
        prompt_ids = ctx.tokens(root)
        branches = await ctx.extend([root] * params.n, release_inputs=True)
        outputs = [completion(engine, ctx, i, b, params) for i, b in enumerate(branches)]
    return RequestOutput(
        request_id=request_id,
        prompt=prompt if isinstance(prompt, str) else None,
        prompt_token_ids=prompt_ids,
        outputs=outputs,
        num_cached_tokens=ctx.stats.cached_prompt_tokens,
        metrics=ctx.stats.as_dict(),
    )


def visible_text(engine: Engine, token_ids, stop_reason, params: SamplingParams) -> str:
    """The completion's text as returned: a matched stop string cut unless asked for."""
    text = engine.decode(token_ids)
    if isinstance(stop_reason, str) and not params.include_stop_str_in_output:
        text = text[: text.rfind(stop_reason)] if stop_reason in text else text
    return text


def completion(
    engine: Engine, ctx: EngineContext, index: int, branch: Branch, params: SamplingParams
) -> CompletionOutput:
    token_ids = ctx.tokens(branch)[branch.prompt_length :]
    stop_reason = ctx.stop_reason(branch)
    logprobs = None
    if params.logprobs is not None:
        logprobs = []
        tops = ctx.top_logprobs(branch) or [{}] * len(token_ids)
        for tok, lp, top in zip(token_ids, ctx.logprobs(branch), tops, strict=False):
            ranks = {t: r + 1 for r, t in enumerate(top)}
            entry = {t: Logprob(v, ranks[t], engine.decode([t])) for t, v in top.items()}
            entry[tok] = Logprob(lp, ranks.get(tok), engine.decode([tok]))
            logprobs.append(entry)
    return CompletionOutput(
        index,
        visible_text(engine, token_ids, stop_reason, params),
        token_ids,
        branch.cumulative_logprob,
        logprobs,
        openai_finish_reason(branch.finish_reason),
        stop_reason,
    )


class _QueueSink:
    """Hands deltas from the loop thread to this request's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue):
        self._loop, self._queue = loop, queue

    def push(self, delta: TokenDelta) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, delta)


class _Completion:
    """One streamed completion's state: its tokens so far and the text already emitted."""

    def __init__(self, index: int):
        self.index = index
        self.token_ids: list[int] = []
        self.new: tuple[int, ...] = ()
        self.logprob = 0.0
        self.emitted = ""
        self.finish_reason: str | None = None
        self.stop_reason: int | str | None = None

    def add(self, delta: TokenDelta) -> None:
        self.token_ids += delta.token_ids
        self.new += delta.token_ids
        self.logprob += sum(delta.logprobs)
        if delta.finish_reason is not None:
            self.finish_reason, self.stop_reason = delta.finish_reason, delta.stop_reason

    def output(self, engine: Engine, params: SamplingParams) -> CompletionOutput:
        """The delta since the last output (new tokens and text), then forget it."""
        if self.finish_reason is None:
            text = engine.decode(self.token_ids)
            hold = max((len(s) for s in params.stop), default=1) - 1
            text = text[: len(text) - hold] if hold else text
        else:
            text = visible_text(engine, self.token_ids, self.stop_reason, params)
        delta = text[len(self.emitted) :] if text.startswith(self.emitted) else ""
        self.emitted = text if text.startswith(self.emitted) else self.emitted
        reason = None if self.finish_reason is None else openai_finish_reason(self.finish_reason)
        out = CompletionOutput(
            self.index, delta, self.new, self.logprob, None, reason, self.stop_reason
        )
        self.new = ()
        return out


async def stream(
    engine: Engine, prompt: Prompt, params: SamplingParams, request_id: str
) -> AsyncIterator[RequestOutput]:
    ctx = engine.search(params, seed=params.seed)
    task = None
    try:
        root = ctx.root(prompt)
        roots = [root] * params.n
        draws = ctx.prepare(roots)
        states = {d.child: _Completion(i) for i, d in enumerate(draws)}
        queue: asyncio.Queue = asyncio.Queue()
        sink = _QueueSink(asyncio.get_running_loop(), queue)
        task = asyncio.ensure_future(ctx.run(roots, draws, release_inputs=True, sink=sink))
        task.add_done_callback(lambda _: queue.put_nowait(_END))
        prompt_ids = ctx.tokens(root)
        ended = False
        while not ended:
            items = [await queue.get()]
            while not queue.empty() or _all_done(states, items):
                items.append(await queue.get())  # the end follows the last delta at once
            ended = items[-1] is _END
            if ended:
                task.result()  # raises the request's error, if any
            touched = {}
            for delta in items[:-1] if ended else items:
                states[delta.child].add(delta)
                touched[delta.child] = states[delta.child]
            outputs = [c.output(engine, params) for c in sorted(touched.values(), key=_index)]
            yield RequestOutput(
                request_id,
                prompt if isinstance(prompt, str) else None,
                prompt_ids,
                outputs,
                ctx.stats.cached_prompt_tokens,
                finished=ended,
                metrics=ctx.stats.as_dict() if ended else {},
            )
    finally:
        if task is not None and not task.done():
            task.cancel()
        ctx.close()


def _all_done(states: dict, items: list) -> bool:
    """Every completion's last delta is in hand but the end marker is not (yet)."""
    if items[-1] is _END:
        return False
    finished = {c for c, s in states.items() if s.finish_reason is not None}
    finished |= {d.child for d in items if d.finish_reason is not None}
    return len(finished) == len(states)


def _index(c: _Completion) -> int:
    return c.index
