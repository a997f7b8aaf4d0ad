"""EngineCore: the synchronous heart of the engine and the one owner of every KV block.

    step() = schedule -> run the model -> sample -> postprocess -> finish

It owns the block manager, the handle table (live branches -> block tables), the scheduler, the
model runner and the work in flight (engine/torch_backend/inflight.py: starting draws and
prefills, and taking them back on cancel, release, close or failure), and is single-threaded by
contract: only the engine loop's thread touches it. Callers change its state only through typed
commands (engine/torch_backend/commands.py), applied between steps by `execute`. It knows token
ids, not text (the tokenizer's decode is injected for stop strings) and not searches beyond an
owner id per handle and sequence.

A waiting sequence that cannot fit while nothing runs (the scheduler has already taken the
blocks of other waiting sequences) takes the KV of idle branches, least recently used first:
their blocks are freed and their tokens kept, so their next extend recomputes them (counted as
recompute in SearchStats; full blocks keep their hash, so mostly from the prefix cache). It fails
with an error only when the pool could not hold it even empty.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
from ponder.engine.structured import hooks as structured
from ponder.engine.torch_backend import commands as cmd
from ponder.engine.torch_backend.handles import Handle, HandleTable, Pending, Prefill
from ponder.engine.torch_backend.inflight import InFlight
from ponder.engine.torch_backend.kv_cache import BlockManager
from ponder.engine.torch_backend.model_runner import ModelRunner
from ponder.engine.torch_backend.outcome import Tally, context_tally, continuation
from ponder.engine.torch_backend.sampling import SampleOutput, sample
from ponder.engine.torch_backend.scheduler import ScheduledBatch, Scheduler
from ponder.engine.torch_backend.sequence import Sequence


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
        self.inflight = InFlight(self.scheduler, self.handles, blocks)

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    def snapshot(self) -> CoreSnapshot:
        stats = self.blocks.stats
        return CoreSnapshot(stats, len(self.handles), len(self.inflight), self.counters.steps)

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
        params = [seq.params for seq in rows]
        seeds = [seq.seed for seq in rows]
        counters = [seq.num_new_tokens for seq in rows]  # draw k of a stream makes new token k
        num_top = max(seq.num_top_logprobs for seq in rows)
        whole = len(batch.sample_rows) == logits.shape[0]
        if whole and self.runner.native_sampling and all(seq.grammar is None for seq in rows):
            # nothing to mask: no copy (sample only reads the logits)
            return sample(logits, params, seeds, counters, num_top=num_top, native=True)
        # (S, V), a copy: masking it touches nothing shared. Rows are increasing, so all of
        # them means every row in order (a clone; indexing by a Python list costs far more).
        if len(batch.sample_rows) == logits.shape[0]:
            logits = logits.clone()
        else:
            logits = logits.index_select(0, torch.tensor(batch.sample_rows, device=logits.device))
        structured.apply_masks(logits, rows)  # constrained rows keep only allowed tokens
        return sample(logits, params, seeds, counters, num_top=num_top)

    def _stream(self, sampled: list[Sequence]) -> None:
        for seq in sampled:
            record = self.inflight.draws.get(seq.child)
            if record is None or record[1].sink is None:
                continue
            delta = cmd.TokenDelta(
                seq.child,
                (seq.token_ids[-1],),
                (seq.logprobs[-1],),
                seq.finish_reason,
                seq.stop_reason,
            )
            try:  # noqa: SIM105 (a suppress() context per token costs more than the push)
                record[1].sink.push(delta)
            except Exception:  # a closed consumer must not stop the engine
                pass

    def _handle_stuck(self, seq: Sequence) -> None:
        """Nothing runs and `seq` does not fit: drop the KV of idle branches, least recently
        used first, until it fits (they recompute on their next read, mostly from the prefix
        cache). Only a sequence the empty pool cannot hold fails."""
        self.handles.make_room(seq.token_ids)
        if self.blocks.can_allocate(seq.token_ids):
            return
        self.scheduler.abort(seq)
        stats = self.blocks.stats
        seq.finish_reason = "error"
        seq.error = (
            f"the KV pool cannot hold this sequence ({len(seq.token_ids)} tokens): "
            f"{stats.used} of {stats.total} blocks of {self.blocks.block_size} are in use with "
            "no idle branch left to evict; start the engine with more KV blocks or ask for "
            "fewer tokens"
        )
        self._finish(seq)

    def _finish(self, seq: Sequence) -> None:
        prefill = self.inflight.prefills.pop(seq.seq_id, None)
        if prefill is not None:
            self._finish_prefill(prefill)
            return
        record = self.inflight.draws.pop(seq.child, None)
        if record is None:  # cancelled meanwhile
            self._free(seq.block_table)
            return
        _, pending = record
        if seq.error is not None:
            self._free(seq.block_table)
            cmd.resolve(pending.draw.reply, error=RuntimeError(seq.error))
            return
        tally = self.inflight.unreported.pop(seq.owner, Tally())
        if seq.computes_prompt:
            tally += context_tally(seq, seq.start_len)
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
        owed = self.inflight.unreported
        owed[seq.owner] = owed.get(seq.owner, Tally()) + context_tally(seq, seq.start_len + 1)
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
            self.inflight.start_draw(pending, source)
        self._free(seq.block_table)

    def _free(self, table: list[int]) -> None:
        if table:
            self.blocks.free(table)

    # ------------------------------------------------------------------ commands

    def execute(self, command: cmd.Command) -> None:
        """Apply one command (between steps). A caller's mistake lands in its reply."""
        match command:
            case cmd.NewRoot(owner, handle, token_ids, grammar):
                self.handles.add(handle, Handle(owner, token_ids, grammar=grammar))
            case cmd.Fork(owner, source, handles):
                self._fork(owner, source, handles)
            case cmd.Release(owner, handles):
                self.inflight.release(owner, handles)
            case cmd.Extend():
                self._extend(command)
            case cmd.Cancel(owner, children):
                self.inflight.cancel(owner, set(children))
            case cmd.CloseOwner(owner, reply):
                self.inflight.close_owner(owner)
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
            self.inflight.start_prefill(source_id, source)  # computed once, for every fork
        self.handles.fork(source_id, handle_ids, owner)

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
                self.inflight.start_draw(pending, parent)
            elif command.release_inputs and uses[draw.parent] == 1:
                # Read once and released by this call: the draw computes its prompt itself,
                # so no root pins blocks while it waits for a seat.
                self.inflight.start_draw(pending, self.handles.take_table(draw.parent), take=True)
            else:
                self.inflight.start_prefill(draw.parent, parent).parked.append(pending)
        if command.release_inputs:
            self.inflight.release(owner, {d.parent for d in command.draws})

    def fail_all(self, exc: BaseException) -> None:
        """A step raised (a bug) or the engine closes: fail everything in flight."""
        self.inflight.fail_all(exc)

    def _update_weights(self, weights: dict, reply) -> None:
        busy = len(self.handles) + len(self.inflight.draws) + len(self.inflight.prefills)
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
