"""EngineContext: the SearchContext verbs on ponder's own torch engine, with explicit forks.

The context is a thin caller-side view: for each live branch it keeps only immutable data (token
ids, the logprobs and stop reason of the extend that produced it). The KV behind a branch is a
handle in the engine core, its one owner (engine/torch_backend/handles.py); every verb posts a
typed command naming handle ids (engine/torch_backend/commands.py), in order, without waiting,
except `extend`, which awaits its draws.

Lifetime and cancellation: the context is one owner in the core. `close()` posts CloseOwner
(release every handle, abort every draw in flight) and returns at once; `aclose()` (used by
`async with`) awaits that without blocking the event loop; a context dropped without closing
posts it from `__del__`. Cancelling an awaited `extend` posts a Cancel for exactly that call's
draws, so nothing else is touched and nothing leaks.

Constrained decoding: a context whose params carry `structured_outputs` compiles it here, on
the caller's thread (a constraint the backend rejects is a ValueError at submission, never in
the loop); each root starts the grammar, and the core carries the state along its handles.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ponder.engine.protocol import Branch, SearchContext, SearchStats
from ponder.engine.sampling_params import SamplingParams, check_stop_strings
from ponder.engine.torch_backend import commands as cmd
from ponder.engine.torch_backend.sampling import RowParams
from ponder.engine.torch_backend.sequence import StopRule

if TYPE_CHECKING:
    from ponder.engine.torch_backend.engine import Engine


class _TokenCounter:
    """The sink of one extend call: counts its sampled tokens for `progress()` (written on the
    engine loop thread, read on the caller's: one writer), and hands each delta on to the
    caller's sink when there is one (a streamed request)."""

    __slots__ = ("inner", "tokens")

    def __init__(self, inner: cmd.Sink | None):
        self.inner = inner
        self.tokens = 0

    def push(self, delta: cmd.TokenDelta) -> None:
        self.tokens += len(delta.token_ids)
        if self.inner is not None:
            self.inner.push(delta)


@dataclass(frozen=True, slots=True)
class _BranchInfo:
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...] = ()  # of the tokens the producing extend sampled
    top_logprobs: tuple[dict[int, float], ...] = ()
    stop_reason: int | str | None = None  # the stop string or token that ended that extend


class EngineContext(SearchContext):
    def __init__(
        self,
        engine: Engine,
        params: SamplingParams | None = None,
        *,
        seed: int = 0,
        question: str | None = None,
    ):
        if params is not None and not isinstance(params, SamplingParams):
            raise ValueError(f"params must be a SamplingParams, got {type(params).__name__}")
        self.engine = engine
        self.params = params or SamplingParams()
        self.seed = seed
        self.question = question  # the prompt verifiers see; None: the decoded prompt tokens
        self.stats = SearchStats()
        self.owner = engine.next_id()
        self._branches: dict[int, _BranchInfo] = {}
        self._running: set[_TokenCounter] = set()  # one per extend call in flight
        self._draws = itertools.count()  # numbers the sampled sequences, for their seeds
        self._closed = False
        self._grammar = None  # the start state every root of this context shares
        if self.params.structured_outputs is not None:
            self._grammar = engine.grammars.compile(self.params.structured_outputs).start()

    # ------------------------------------------------------------------ verbs

    def root(self, prompt: str | Sequence[int]) -> Branch:
        self._check_open()
        ids = self.engine.prompt_ids(prompt)
        branch = Branch(self.engine.next_id(), None, len(ids), len(ids))
        self.engine.loop.post(cmd.NewRoot(self.owner, branch.id, ids, self._grammar))
        self._branches[branch.id] = _BranchInfo(ids)
        self.stats.prompt_tokens += len(ids)
        return branch

    def fork(self, branch: Branch, n: int) -> list[Branch]:
        if type(n) is not int or n < 1:
            raise ValueError(f"fork needs an int n >= 1, got {n!r}")
        info = self._info(branch)
        kids = [branch.child(self.engine.next_id()) for _ in range(n)]
        self.engine.loop.post(cmd.Fork(self.owner, branch.id, tuple(k.id for k in kids)))
        for kid in kids:
            self._branches[kid.id] = info
        return kids

    async def extend(
        self,
        branches: Sequence[Branch],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
        release_inputs: bool = False,
    ) -> list[Branch]:
        """`release_inputs=True` releases the input branches as soon as their continuations are
        scheduled (they hold the shared blocks from then on), so nothing pins the prefix."""
        branches = list(branches)
        draws = self.prepare(branches, stop=stop, max_tokens=max_tokens)
        return await self.run(branches, draws, release_inputs=release_inputs)

    def prepare(
        self, branches: Sequence[Branch], *, stop=None, max_tokens: int | None = None
    ) -> tuple[cmd.Draw, ...]:
        """The validated draws of an extend call (nothing is posted): one per branch, each
        naming the handle id its result will have. Raises ValueError for a bad call."""
        return self._draws_for(list(branches), stop, max_tokens)

    async def run(
        self,
        branches: Sequence[Branch],
        draws: tuple[cmd.Draw, ...],
        *,
        release_inputs: bool = False,
        sink: cmd.Sink | None = None,
    ) -> list[Branch]:
        """Post prepared draws and await them; with a `sink`, every sampled token is also
        pushed to it as it is sampled (streaming). Either way the call's tokens are counted as
        they are sampled, for `progress()`."""
        branches = list(branches)
        if not branches:
            return []
        self.stats.extend_calls += 1
        infos = [self._info(b) for b in branches]
        counter = _TokenCounter(sink)
        self.engine.loop.post(cmd.Extend(self.owner, draws, release_inputs, counter))
        if release_inputs:
            for b in branches:
                self._branches.pop(b.id, None)
        self._running.add(counter)
        try:
            done = await asyncio.gather(
                *(asyncio.wrap_future(d.reply) for d in draws), return_exceptions=True
            )
        except BaseException:  # cancelled: abort exactly this call's draws
            if not self.engine.closed:
                self.engine.loop.post(cmd.Cancel(self.owner, tuple(d.child for d in draws)))
            raise
        finally:
            self._running.discard(counter)  # its tokens move into stats in _adopt, no await
        return self._adopt(branches, infos, done)

    def release(self, branches: Iterable[Branch]) -> None:
        if self._closed:
            return
        ids = tuple(b.id for b in branches if self._branches.pop(b.id, None) is not None)
        if ids and not self.engine.closed:
            self.engine.loop.post(cmd.Release(self.owner, ids))

    def tokens(self, branch: Branch) -> tuple[int, ...]:
        return self._info(branch).token_ids

    def text(self, branch: Branch) -> str:
        return self.engine.decode(self._info(branch).token_ids[branch.prompt_length :])

    def prompt_text(self, branch: Branch) -> str:
        if self.question is not None:
            return self.question
        return self.engine.decode(self._info(branch).token_ids[: branch.prompt_length])

    def logprobs(self, branch: Branch) -> tuple[float, ...]:
        """Logprobs of the tokens sampled by the extend call that produced this branch."""
        return self._info(branch).logprobs

    def top_logprobs(self, branch: Branch) -> tuple[dict[int, float], ...]:
        return self._info(branch).top_logprobs

    def stop_reason(self, branch: Branch) -> int | str | None:
        """The stop string or stop token id that ended the extend producing this branch."""
        return self._info(branch).stop_reason

    @property
    def live(self) -> set[int]:
        """Ids of the branches not yet released."""
        return set(self._branches)

    def live_branches(self) -> int:
        return len(self._branches)

    def tokens_in_flight(self) -> int:
        return sum(c.tokens for c in list(self._running))

    def close(self) -> None:
        self._post_close(None)

    async def aclose(self) -> None:
        reply = cmd.reply_future()
        if self._post_close(reply):
            await asyncio.wrap_future(reply)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: nothing to release into
            self._post_close(None)

    # ------------------------------------------------------------------ internals

    def _post_close(self, reply) -> bool:
        if getattr(self, "_closed", True):
            return False
        self._closed = True
        self._branches.clear()
        if self.stats.finished is None:
            self.stats.finished = time.perf_counter()
        if self.engine.closed:
            return False
        self.engine.loop.post(cmd.CloseOwner(self.owner, reply))
        return True

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this search context is closed")

    def _info(self, branch: Branch) -> _BranchInfo:
        self._check_open()
        info = self._branches.get(branch.id)
        if info is None:
            raise ValueError(f"branch {branch.id} is unknown to this context or was released")
        return info

    def _draws_for(self, branches: list[Branch], stop, max_tokens) -> tuple[cmd.Draw, ...]:
        """Validate a whole extend call before anything is posted, and describe its draws."""
        p = self.params
        for b in branches:
            self._info(b)
            if b.done:
                raise ValueError(
                    f"branch {b.id} is done ({b.finish_reason}); it cannot be extended"
                )
        if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
            raise ValueError(f"max_tokens must be an int >= 1 or None, got {max_tokens!r}")
        stops = p.stop if stop is None else check_stop_strings(stop, "extend(stop=...)")
        draws = []
        for b in branches:
            budget = p.max_tokens if max_tokens is None else max_tokens
            rule = StopRule(
                max_new_tokens=max(1, min(budget, self.engine.max_model_len - b.length)),
                eos_token_ids=frozenset() if p.ignore_eos else self.engine.eos_token_ids,
                stop_token_ids=frozenset(p.stop_token_ids),
                stop_strings=stops,
            )
            draws.append(
                cmd.Draw(
                    parent=b.id,
                    child=self.engine.next_id(),
                    stop=rule,
                    params=RowParams(p.temperature, p.top_k, p.top_p, p.min_p),
                    seed=None if p.greedy else self._draw_seed(),
                    num_top_logprobs=p.logprobs or 0,
                )
            )
        return tuple(draws)

    def _draw_seed(self) -> int:
        digest = hashlib.blake2b(f"{self.seed}:{next(self._draws)}".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "little") & (2**63 - 1)

    def _adopt(self, branches: list[Branch], infos: list[_BranchInfo], done: list) -> list[Branch]:
        """Turn continuations into branches; on any failure release the others and raise."""
        errors = [d for d in done if isinstance(d, BaseException)]
        if errors:
            ok = tuple(d.child for d in done if not isinstance(d, BaseException))
            if ok and not self.engine.closed:
                self.engine.loop.post(cmd.Release(self.owner, ok))
            raise errors[0]
        if self._closed:  # closed while this call waited: its results went with the owner
            raise RuntimeError("this search context was closed while extend ran")
        out = []
        s = self.stats
        for parent, info, c in zip(branches, infos, done, strict=True):
            tokens = info.token_ids + c.new_token_ids
            branch = Branch(
                c.child,
                parent.id,
                len(tokens),
                parent.prompt_length,
                parent.cumulative_logprob + sum(c.logprobs),
                c.finish_reason,
            )
            self._branches[branch.id] = _BranchInfo(
                tokens, c.logprobs, c.top_logprobs, c.stop_reason
            )
            s.generated_tokens += len(c.new_token_ids)
            s.samples += 1
            s.cached_prompt_tokens += c.cached_prompt_tokens
            s.computed_prompt_tokens += c.computed_prompt_tokens
            s.recomputed_tokens += c.recomputed_tokens
            out.append(branch)
        s.queue_seconds += min(c.queue_seconds for c in done)
        s.latency_steps += max(c.latency_steps for c in done)
        return out
