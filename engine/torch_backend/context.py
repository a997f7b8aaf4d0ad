"""EngineContext: the SearchContext verbs on ponder's own torch engine, with explicit forks.

Each live branch owns a block table; `fork` copies it and raises ref counts (on the engine loop's
thread, in order with everything else), `extend` turns branches into sequences that share their
parent's blocks (copy-on-write on the partial last block), and a finished sequence's blocks become
the new branch's. A root is prefilled once by a prefill job before anything forks from it; the
job keeps the last position's logits and every continuation samples its first token from them,
so n continuations of one prompt compute the prompt once and share all of its blocks.
`close()` releases every branch the context still holds, so a search cannot leak KV blocks
whatever its strategy forgets.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from ponder.engine.protocol import Branch, SearchContext, SearchStats
from ponder.engine.sampling_params import SamplingParams
from ponder.engine.torch_backend.sampling import RowParams
from ponder.engine.torch_backend.sequence import Sequence as Seq
from ponder.engine.torch_backend.sequence import StopRule

if TYPE_CHECKING:
    from ponder.engine.torch_backend.engine import Engine


@dataclass(slots=True)
class _PrefillJob:
    """The KV of a branch's tokens, computed once for every branch that needs it.

    `users` counts the branch states attached to the job; each takes its own share of the
    job's blocks when it first extends, and the last one adopts them, so nothing leaks even if
    users are released before the job finishes."""

    seq: Seq
    future: Future | None = None
    users: int = 0
    counted: bool = False


@dataclass(slots=True)
class _BranchState:
    token_ids: tuple[int, ...]
    block_table: list[int] = field(default_factory=list)
    num_computed: int = 0
    logprobs: tuple[float, ...] = ()  # logprobs of the tokens the producing extend sampled
    top_logprobs: tuple[dict[int, float], ...] = ()
    job: _PrefillJob | None = None
    logits: torch.Tensor | None = None  # (V,) next-token logits when every token is computed
    stop_reason: int | str | None = None  # the stop string or token that ended the producing extend

    @property
    def needs_prefill(self) -> bool:
        """A root (or its fork): nothing computed yet beyond what a prefill job provides."""
        return self.num_computed < len(self.token_ids) - 1


class EngineContext(SearchContext):
    def __init__(
        self,
        engine: Engine,
        params: SamplingParams | None = None,
        *,
        seed: int = 0,
        question: str | None = None,
    ):
        self.engine = engine
        self.params = params or SamplingParams()
        self.seed = seed
        self.question = question  # the prompt verifiers see; None: the decoded prompt tokens
        self.stats = SearchStats()
        self._states: dict[int, _BranchState] = {}
        self._ids = itertools.count()
        self._draws = itertools.count()  # numbers the sampled sequences, for their seeds
        self._closed = False

    # ------------------------------------------------------------------ verbs

    def root(self, prompt: str | Sequence[int]) -> Branch:
        self._check_open()
        ids = self.engine.encode(prompt) if isinstance(prompt, str) else tuple(prompt)
        self.engine.check_prompt(ids)
        branch = Branch(id=next(self._ids), parent=None, length=len(ids), prompt_length=len(ids))
        self._states[branch.id] = _BranchState(token_ids=tuple(ids))
        self.stats.prompt_tokens += len(ids)
        return branch

    def fork(self, branch: Branch, n: int) -> list[Branch]:
        if n < 1:
            raise ValueError(f"fork needs n >= 1, got {n}")
        state = self._state(branch)
        if state.needs_prefill and state.job is None:
            state.job = self._new_job(state)
        kids = []
        for _ in range(n):
            kid = branch.child(next(self._ids))
            kid_state = _BranchState(
                state.token_ids,
                [],
                state.num_computed,
                state.logprobs,
                state.top_logprobs,
                state.job,
                state.logits,
            )
            if state.job is not None:
                state.job.users += 1
            self._states[kid.id] = kid_state
            kids.append(kid)
        if not state.needs_prefill:
            # The parent's table may itself still be filling on the loop thread; commands run in
            # order, so by the time this one runs it is complete.
            tables = [self._states[k.id].block_table for k in kids]
            source, blocks = state.block_table, self.engine.blocks
            self.engine.loop.call(lambda: [t.extend(blocks.fork(source)) for t in tables])
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
        if not branches:
            return []
        states = [self._state(b) for b in branches]
        for b in branches:
            if b.done:
                raise ValueError(
                    f"branch {b.id} is done ({b.finish_reason}); it cannot be extended"
                )
        self.stats.extend_calls += 1
        # A root extended once and released at once (plain n=1 generation) skips the prefill
        # job: its one continuation computes the prompt itself, so no root pins blocks while
        # it waits. Many such requests under a full pool then queue instead of each pinning
        # its prompt and starving every continuation.
        counts = Counter(b.id for b in branches)
        direct = {
            b.id
            for b, state in zip(branches, states, strict=True)
            if release_inputs
            and counts[b.id] == 1
            and state.needs_prefill
            and state.job is None
            and not state.block_table
        }
        unique = {b.id: b for b in branches if b.id not in direct}
        await asyncio.gather(*(self._prefill(i) for i in unique))
        seqs = [self._sequence(state, stop, max_tokens) for state in states]
        direct_seqs = {id(seq) for b, seq in zip(branches, seqs, strict=True) if b.id in direct}
        parents = [state.block_table for state in states]
        blocks = self.engine.blocks

        def share_parent_blocks() -> None:
            for seq, table in zip(seqs, parents, strict=True):
                seq.block_table = blocks.fork(table)

        futures = self.engine.loop.submit(seqs, share_parent_blocks)
        if release_inputs:
            self.release(branches)  # posted after the submit: the forks happen first
        done = await asyncio.gather(
            *(asyncio.wrap_future(f) for f in futures), return_exceptions=True
        )
        return self._adopt(branches, done, direct_seqs)

    def release(self, branches: Iterable[Branch]) -> None:
        tables = []
        for b in branches:
            state = self._states.pop(b.id, None)
            if state is None:
                continue  # idempotent
            tables.append(state.block_table)  # may still be filling: emptiness is checked later
            if state.job is not None:
                self._leave_job(state.job)
        self._free_later(tables)

    def tokens(self, branch: Branch) -> tuple[int, ...]:
        return self._state(branch).token_ids

    def text(self, branch: Branch) -> str:
        return self.engine.decode(self._state(branch).token_ids[branch.prompt_length :])

    def prompt_text(self, branch: Branch) -> str:
        if self.question is not None:
            return self.question
        return self.engine.decode(self._state(branch).token_ids[: branch.prompt_length])

    def logprobs(self, branch: Branch) -> tuple[float, ...]:
        """Logprobs of the tokens sampled by the extend call that produced this branch."""
        return self._state(branch).logprobs

    def top_logprobs(self, branch: Branch) -> tuple[dict[int, float], ...]:
        return self._state(branch).top_logprobs

    def stop_reason(self, branch: Branch) -> int | str | None:
        """The stop string or stop token id that ended the extend producing this branch."""
        return self._state(branch).stop_reason

    def close(self) -> None:
        if self._closed:
            return
        self.release([Branch(i, None, 0, 0) for i in list(self._states)])
        self._closed = True
        if self.stats.finished is None:
            self.stats.finished = time.perf_counter()
        if not self.engine.closed:
            self.engine.loop.call(lambda: None).result()  # wait until the frees are applied

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this search context is closed")

    def _state(self, branch: Branch) -> _BranchState:
        self._check_open()
        state = self._states.get(branch.id)
        if state is None:
            raise ValueError(f"branch {branch.id} is unknown to this context or was released")
        return state

    def _new_job(self, state: _BranchState) -> _PrefillJob:
        job_seq = Seq(
            seq_id=self.engine.next_seq_id(),
            token_ids=list(state.token_ids),
            stop=StopRule(max_new_tokens=0),
            params=RowParams(1.0, 0, 1.0, 0.0),
        )
        if state.block_table:
            raise RuntimeError("only a branch without KV (a root or its fork) is prefilled")
        return _PrefillJob(job_seq, users=1)

    def _leave_job(self, job: _PrefillJob) -> None:
        """A user of the job is gone without taking blocks; the last one frees them."""
        job.users -= 1
        if job.users > 0:
            return
        if job.future is None:
            return
        free = self._free_later
        job.future.add_done_callback(
            lambda f: f.exception() is None and free([f.result().block_table])
        )

    async def _prefill(self, branch_id: int) -> None:
        """Compute the KV of a root's tokens and its next-token logits, once, before it forks."""
        state = self._states[branch_id]
        if not state.needs_prefill:
            return
        if state.job is None:
            state.job = self._new_job(state)
        job = state.job
        if job.future is None:
            job.future = self.engine.loop.submit([job.seq])[0]
        seq = await asyncio.wrap_future(job.future)
        if state.job is not job:  # another call on this branch got here first
            return
        state.job = None
        job.users -= 1
        if seq.error:
            if job.users == 0:
                self._free_later([seq.block_table])
            raise RuntimeError(seq.error)
        if not job.counted:
            job.counted = True
            computed = len(seq.token_ids) - seq.cached_tokens
            self.stats.cached_prompt_tokens += seq.cached_tokens
            self.stats.computed_prompt_tokens += computed
            self.stats.recomputed_tokens += max(0, seq.recomputed_tokens - computed)
        if job.users == 0:  # last user adopts the job's blocks
            table = seq.block_table
        else:
            blocks = self.engine.blocks
            table = await asyncio.wrap_future(
                self.engine.loop.call(lambda: blocks.fork(seq.block_table))
            )
        state.block_table, state.num_computed = table, seq.num_computed
        state.logits = seq.last_logits

    def _free_later(self, tables: list[list[int]]) -> None:
        """Free block tables on the loop thread, after every command posted before."""
        if tables and not self.engine.closed:
            blocks = self.engine.blocks
            self.engine.loop.call(lambda: [blocks.free(t) for t in tables if t])

    def _sequence(self, state: _BranchState, stop, max_tokens) -> Seq:
        p = self.params
        budget = p.max_tokens if max_tokens is None else max_tokens
        budget = min(budget, self.engine.max_model_len - len(state.token_ids))
        rule = StopRule(
            max_new_tokens=max(budget, 1),
            eos_token_ids=frozenset() if p.ignore_eos else self.engine.eos_token_ids,
            stop_token_ids=frozenset(p.stop_token_ids),
            stop_strings=tuple(p.stop if stop is None else stop),
        )
        draw = next(self._draws)
        generator = None
        if not p.greedy:
            digest = hashlib.blake2b(f"{self.seed}:{draw}".encode(), digest_size=8).digest()
            generator = torch.Generator(device=self.engine.device)
            generator.manual_seed(int.from_bytes(digest, "little"))
        return Seq(
            seq_id=self.engine.next_seq_id(),
            token_ids=list(state.token_ids),
            stop=rule,
            params=RowParams(p.temperature, p.top_k, p.top_p, p.min_p),
            generator=generator,
            num_computed=state.num_computed,
            num_top_logprobs=p.logprobs or 0,
            first_logits=state.logits if state.num_computed == len(state.token_ids) else None,
        )

    def _adopt(
        self,
        branches: Sequence[Branch],
        done: list,
        direct: set[int] | frozenset[int] = frozenset(),
    ) -> list[Branch]:
        """Turn finished sequences into branches; on any failure free them all and raise.
        `direct`: ids of sequences that computed their own prompt (no prefill job)."""
        errors = [d for d in done if isinstance(d, BaseException)]
        errors += [
            RuntimeError(d.error) for d in done if not isinstance(d, BaseException) and d.error
        ]
        if errors:
            self._free_later(
                [d.block_table for d in done if not isinstance(d, BaseException) and d.block_table]
            )
            raise errors[0]
        out = []
        for parent, seq in zip(branches, done, strict=True):
            reason = seq.finish_reason
            if reason == "stop" and seq.stop_reason is None:
                reason = "eos"
            if reason == "length" and len(seq.token_ids) >= self.engine.max_model_len:
                reason = "max_model_len"
            branch = Branch(
                next(self._ids),
                parent.id,
                len(seq.token_ids),
                parent.prompt_length,
                parent.cumulative_logprob + sum(seq.logprobs),
                reason,
            )
            self._states[branch.id] = _BranchState(
                tuple(seq.token_ids),
                seq.block_table,
                seq.num_computed,
                tuple(seq.logprobs),
                tuple(seq.top_logprobs),
                stop_reason=seq.stop_reason,
            )
            self.stats.generated_tokens += seq.num_new_tokens
            self.stats.samples += 1
            self.stats.cached_prompt_tokens += seq.cached_tokens
            recomputed = seq.recomputed_tokens
            if id(seq) in direct:  # its first pass over the prompt is compute, not recompute
                first_pass = max(0, seq.start_len - 1 - seq.cached_tokens)
                self.stats.computed_prompt_tokens += seq.start_len - seq.cached_tokens
                recomputed = max(0, recomputed - first_pass)
            self.stats.recomputed_tokens += recomputed
            out.append(branch)
        return out
