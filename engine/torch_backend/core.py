"""EngineCore: the synchronous heart of the engine and the one owner of every KV block.

    step() = schedule -> run the model -> sample -> postprocess -> finish

It owns the block manager, the handle table (live branches -> block tables), the scheduler and
the model runner, and is single-threaded by contract: only the engine loop's thread touches it.
Callers change its state only through typed commands (engine/torch_backend/commands.py), applied
between steps by `execute`. It knows token ids, not text (the tokenizer's decode is injected for
stop strings) and not searches beyond an owner id per handle and sequence.

A waiting sequence that cannot fit while nothing runs waits as long as another owner holds
blocks it could release (searches release branches all the time); it fails with an error only
when the pool could not hold it even empty, or when every owner holding blocks is itself waiting
(nobody could ever release: a deadlock).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
from ponder.engine.structured import hooks as structured
from ponder.engine.torch_backend import commands as cmd
from ponder.engine.torch_backend.handles import Handle, HandleTable, Pending, Prefill
from ponder.engine.torch_backend.kv_cache import BlockManager
from ponder.engine.torch_backend.model_runner import ModelRunner
from ponder.engine.torch_backend.outcome import Tally, continuation, prompt_tally
from ponder.engine.torch_backend.sampling import RowParams, SampleOutput, sample
from ponder.engine.torch_backend.scheduler import ScheduledBatch, Scheduler
from ponder.engine.torch_backend.sequence import Sequence, StopRule


@dataclass(slots=True)
class CoreCounters:
    steps: int = 0
    forward_tokens: int = 0
    sampled_tokens: int = 0


@dataclass(frozen=True, slots=True)
class CoreSnapshot:
    kv: object  # KVStats
    live_handles: int
    in_flight: int  # draws and prefills not finished
    steps: int


class EngineCore:
    def __init__(
        self,
        runner: ModelRunner,
        blocks: BlockManager,
        decode: Callable[[list[int]], str],
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int | None = None,
    ):
        self.runner = runner
        self.blocks = blocks
        self.decode = decode
        self.scheduler = Scheduler(
            blocks,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            max_model_len=max_model_len,
        )
        self.handles = HandleTable(blocks)
        self.counters = CoreCounters()
        self._draws: dict[int, tuple[Sequence, Pending]] = {}  # child handle id -> in flight
        self._prefills: dict[int, Prefill] = {}  # prefill seq id -> prefill
        self._unreported: dict[int, Tally] = {}  # owner -> prefill accounting not yet reported
        self._seq_ids = itertools.count()
        self._stalled = False  # nothing fits until a command frees blocks

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work and not self._stalled

    def snapshot(self) -> CoreSnapshot:
        in_flight = len(self._draws) + len(self._prefills)
        return CoreSnapshot(self.blocks.stats, len(self.handles), in_flight, self.counters.steps)

    # ------------------------------------------------------------------ step

    def step(self) -> None:
        """Run one forward pass and deliver what finished in it."""
        batch, stuck = self.scheduler.schedule()
        if stuck is not None:
            self._handle_stuck(stuck)
        if batch is None:
            return
        logits = self.runner.run(batch.inputs, batch.copies)  # (B, V)
        sampled = self._sample(batch, logits)
        finished = self.scheduler.postprocess(batch, sampled, self.decode)
        self.counters.steps += 1
        self.counters.forward_tokens += batch.num_tokens
        self.counters.sampled_tokens += len(batch.sample_rows)
        self._stream(batch.samplers)
        for seq in finished:
            self._finish(seq)

    def _sample(self, batch: ScheduledBatch, logits: torch.Tensor) -> SampleOutput | None:
        rows = batch.samplers
        if not rows:
            return None
        logits = logits[batch.sample_rows]  # (S, V), a copy: masking it touches nothing shared
        structured.apply_masks(logits, rows)  # constrained rows keep only allowed tokens
        return sample(
            logits,
            [seq.params for seq in rows],
            [seq.generator for seq in rows],
            num_top=max(seq.num_top_logprobs for seq in rows),
        )

    def _stream(self, sampled: list[Sequence]) -> None:
        for seq in sampled:
            record = self._draws.get(seq.child)
            if record is None or record[1].sink is None:
                continue
            delta = cmd.TokenDelta(
                seq.child,
                (seq.token_ids[-1],),
                (seq.logprobs[-1],),
                seq.finish_reason,
                seq.stop_reason,
            )
            with contextlib.suppress(Exception):  # a closed consumer must not stop the engine
                record[1].sink.push(delta)

    def _handle_stuck(self, seq: Sequence) -> None:
        holders = self.handles.owners_holding_blocks()
        waiting = {s.owner for s in self.scheduler.waiting}
        too_big = -(-len(seq.token_ids) // self.blocks.block_size) > self.blocks.num_blocks
        if not too_big and holders - waiting:
            self._stalled = True  # another owner can release blocks: wait for a command
            return
        self.scheduler.abort(seq)
        stats = self.blocks.stats
        seq.finish_reason = "error"
        seq.error = (
            f"the KV pool cannot hold this sequence ({len(seq.token_ids)} tokens): "
            f"{stats.used} of {stats.total} blocks are pinned by live branches of searches "
            "that are themselves waiting; release branches or start the engine with more KV "
            "blocks"
        )
        self._finish(seq)

    def _finish(self, seq: Sequence) -> None:
        prefill = self._prefills.pop(seq.seq_id, None)
        if prefill is not None:
            self._finish_prefill(prefill)
            return
        record = self._draws.pop(seq.child, None)
        if record is None:  # cancelled meanwhile
            self._free(seq.block_table)
            return
        _, pending = record
        if seq.error is not None:
            self._free(seq.block_table)
            cmd.resolve(pending.draw.reply, error=RuntimeError(seq.error))
            return
        tally = self._unreported.pop(seq.owner, Tally())
        if seq.computes_prompt:
            tally += prompt_tally(seq, seq.start_len)
        else:
            tally += Tally(cached=seq.cached_tokens, recomputed=seq.recomputed_tokens)
        result = continuation(seq, pending, tally, self.counters.steps)
        self.handles.adopt(seq)
        cmd.resolve(pending.draw.reply, result)

    def _finish_prefill(self, prefill: Prefill) -> None:
        seq = prefill.seq
        if seq.error is not None:
            self.handles.fail_prefill(prefill)
            for pending in prefill.parked:
                cmd.resolve(pending.draw.reply, error=RuntimeError(seq.error))
            self._free(seq.block_table)
            return
        self._unreported[seq.owner] = self._unreported.get(seq.owner, Tally()) + prompt_tally(
            seq, seq.start_len + 1
        )
        self.handles.finish_prefill(prefill)
        source = Handle(
            seq.owner,
            prefill.token_ids,
            seq.block_table,
            seq.num_computed,
            seq.num_hashed_blocks,
            grammar=prefill.grammar,
        )
        for pending in prefill.parked:
            self._start_draw(pending, source)
        self._free(seq.block_table)

    def _free(self, table: list[int]) -> None:
        if table:
            self.blocks.free(table)

    # ------------------------------------------------------------------ commands

    def execute(self, command: cmd.Command) -> None:
        """Apply one command (between steps). A caller's mistake lands in its reply."""
        self._stalled = False  # anything may have freed blocks or added work
        match command:
            case cmd.NewRoot(owner, handle, token_ids, grammar):
                self.handles.add(handle, Handle(owner, token_ids, grammar=grammar))
            case cmd.Fork(owner, source, handles):
                self._fork(owner, source, handles)
            case cmd.Release(owner, handles):
                self._release(owner, handles)
            case cmd.Extend():
                self._extend(command)
            case cmd.Cancel(owner, children):
                self._cancel(owner, set(children))
            case cmd.CloseOwner(owner, reply):
                self._close_owner(owner)
                cmd.resolve(reply)
            case cmd.Snapshot(reply):
                cmd.resolve(reply, self.snapshot())
            case cmd.ResetPrefixCache(reply):
                cmd.resolve(reply, self.blocks.reset_prefix_cache())
            case cmd.UpdateWeights(weights, reply):
                self._update_weights(weights, reply)
            case _:
                raise RuntimeError(f"unknown engine command {command!r}")

    def _fork(self, owner: int, source_id: int, handle_ids: tuple[int, ...]) -> None:
        source = self.handles.get(source_id, owner)
        if source.needs_prefill and source.prefill is None:
            self._start_prefill(source_id, source)  # computed once, for every fork
        self.handles.fork(source_id, handle_ids, owner)

    def _release(self, owner: int, handle_ids) -> None:
        for handle_id in handle_ids:
            prefill = self.handles.release(handle_id, owner)
            if prefill is not None:  # nobody wants its KV any more
                self._abort_prefill(prefill)

    def _extend(self, command: cmd.Extend) -> None:
        owner = command.owner
        try:  # validate every parent first, so a bad command changes nothing
            parents = [self.handles.get(d.parent, owner) for d in command.draws]
        except ValueError as exc:
            for d in command.draws:
                cmd.resolve(d.reply, error=exc)
            return
        uses = Counter(d.parent for d in command.draws)
        now, step = time.perf_counter(), self.counters.steps
        for draw, parent in zip(command.draws, parents, strict=True):
            pending = Pending(owner, draw, command.sink, now, step)
            if parent.prefill is not None:
                parent.prefill.parked.append(pending)
            elif not parent.needs_prefill:
                self._start_draw(pending, parent)
            elif command.release_inputs and uses[draw.parent] == 1:
                # Read once and released by this call: the draw computes its prompt itself,
                # so no root pins blocks while it waits for a seat.
                self._start_draw(pending, self.handles.take_table(draw.parent), take=True)
            else:
                self._start_prefill(draw.parent, parent).parked.append(pending)
        if command.release_inputs:
            self._release(owner, {d.parent for d in command.draws})

    def _start_prefill(self, handle_id: int, handle: Handle) -> Prefill:
        seq = Sequence(
            seq_id=next(self._seq_ids),
            token_ids=list(handle.token_ids[:-1]),  # each draw computes the last token itself
            stop=StopRule(max_new_tokens=0),
            params=RowParams(1.0, 0, 1.0, 0.0),
            owner=handle.owner,
            computes_prompt=True,
        )
        prefill = Prefill(seq, handle.token_ids, handle.grammar, members={handle_id})
        handle.prefill = prefill
        self._prefills[seq.seq_id] = prefill
        self.scheduler.add(seq)
        return prefill

    def _start_draw(self, pending: Pending, source: Handle, take: bool = False) -> None:
        """A sequence continuing `source`, sharing its blocks (`take`: moving them)."""
        draw = pending.draw
        table = source.block_table if take else self.blocks.fork(source.block_table)
        generator = None
        if draw.seed is not None:
            generator = torch.Generator(device=self.runner.device).manual_seed(draw.seed)
        seq = Sequence(
            seq_id=next(self._seq_ids),
            token_ids=list(source.token_ids),
            stop=draw.stop,
            params=draw.params,
            generator=generator,
            num_computed=source.num_computed,
            block_table=table,
            num_top_logprobs=draw.num_top_logprobs,
            owner=pending.owner,
            child=draw.child,
            num_hashed_blocks=source.num_hashed_blocks,
            computes_prompt=source.needs_prefill,
            grammar=source.grammar,
        )
        self._draws[draw.child] = (seq, pending)
        self.scheduler.add(seq)

    def _abort_prefill(self, prefill: Prefill) -> None:
        self._prefills.pop(prefill.seq.seq_id, None)
        self.scheduler.abort(prefill.seq)
        self.handles.fail_prefill(prefill)

    def _cancel(self, owner: int, children: set[int]) -> None:
        for child in children:
            record = self._draws.get(child)
            if record is not None and record[1].owner == owner:
                del self._draws[child]
                self.scheduler.abort(record[0])
                cmd.resolve(record[1].draw.reply, error=RuntimeError("the draw was cancelled"))
        for prefill in list(self._prefills.values()):
            prefill.parked = [
                p for p in prefill.parked if not (p.owner == owner and p.draw.child in children)
            ]
            if not prefill.wanted:
                self._abort_prefill(prefill)
        self._release(owner, children)  # those that finished before the cancel arrived

    def _close_owner(self, owner: int) -> None:
        self._cancel(owner, {c for c, (_, p) in self._draws.items() if p.owner == owner})
        for prefill in list(self._prefills.values()):
            prefill.parked = [p for p in prefill.parked if p.owner != owner]
        self._release(owner, self.handles.of_owner(owner))
        for prefill in list(self._prefills.values()):
            if not prefill.wanted:
                self._abort_prefill(prefill)
        self._unreported.pop(owner, None)

    def fail_all(self, exc: BaseException) -> None:
        """A step raised (a bug) or the engine closes: fail everything in flight, free its
        blocks, keep the handles (their owners release them)."""
        for seq, pending in list(self._draws.values()):
            self.scheduler.abort(seq)
            cmd.resolve(pending.draw.reply, error=exc)
        self._draws.clear()
        for prefill in list(self._prefills.values()):
            for pending in prefill.parked:
                cmd.resolve(pending.draw.reply, error=exc)
            prefill.parked.clear()
            self._abort_prefill(prefill)

    def _update_weights(self, weights: dict, reply) -> None:
        busy = len(self.handles) + len(self._draws) + len(self._prefills)
        if busy or self.blocks.stats.used:
            error = RuntimeError(
                f"update_weights needs an idle engine: {busy} branches or requests are live "
                f"and {self.blocks.stats.used} KV blocks in use (their KV is of the old weights)"
            )
            cmd.resolve(reply, error=error)
            return
        try:
            self.runner.model.load_weights(weights)  # validates everything before copying
        except (ValueError, TypeError) as exc:
            cmd.resolve(reply, error=exc)
            return
        self.blocks.reset_prefix_cache()
        cmd.resolve(reply)
