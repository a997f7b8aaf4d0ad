"""Scheduler: continuous batching over every live sequence, fair across owners.

`schedule()` picks the work of one forward pass: every running sequence first (a decode token,
or the next chunk of a long prefill), then waiting sequences while seats (`max_num_seqs`), the
token budget and the KV pool allow. Mixed prefill and decode share the pass, since attention is
ragged.

The policy, across owners (an owner is one search or one request):
- admission: the next seat goes to the waiting sequence whose owner has the fewest running
  sequences (ties: arrival order). A one-sequence request is therefore admitted at the first
  free seat even behind a 64-wide search, instead of after all 64 of its sequences;
- preemption: when the pool runs dry, the victim is the newest running sequence of the owner
  with the most running sequences. Its blocks are freed (full blocks keep their hash, so its
  recompute mostly hits the prefix cache) and it goes back to the front of the queue;
- a waiting sequence that does not fit while nothing runs first takes the blocks of other
  waiting sequences (they recompute); if that is not enough it is returned as `stuck`, and the
  core takes the KV of idle branches for it (least recently used first), or fails it when even
  the empty pool could not hold it.

`postprocess()` advances computed counts, commits newly full blocks to the prefix cache (each
sequence remembers how many are hashed), appends sampled tokens and applies stop rules. It never
frees a finished sequence's blocks: the core decides whether they become a branch or go back.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ponder.engine.structured import hooks as structured
from ponder.engine.torch_backend.kv_cache import BlockManager
from ponder.engine.torch_backend.model_runner import ForwardInput
from ponder.engine.torch_backend.sampling import SampleOutput
from ponder.engine.torch_backend.sequence import Sequence, Status


@dataclass(frozen=True, slots=True)
class ScheduledBatch:
    seqs: list[Sequence]  # sequences with tokens to compute, aligned with inputs
    inputs: list[ForwardInput]
    copies: list[tuple[int, int]]  # copy-on-write (src, dst) block pairs to apply first
    sample_rows: list[int]  # indices into seqs of the sequences that sample after the pass

    @property
    def num_tokens(self) -> int:
        return sum(len(x.token_ids) for x in self.inputs)

    @property
    def samplers(self) -> list[Sequence]:
        """Every sequence that samples a token this step, in sampling order."""
        return [self.seqs[i] for i in self.sample_rows]


@dataclass(slots=True)
class Plan:
    budget: int
    picked: list[tuple[Sequence, int]] = field(default_factory=list)
    copies: list[tuple[int, int]] = field(default_factory=list)


class Scheduler:
    def __init__(
        self,
        blocks: BlockManager,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int | None = None,
    ):
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError(
                f"max_num_seqs ({max_num_seqs}) and max_num_batched_tokens "
                f"({max_num_batched_tokens}) must be >= 1"
            )
        self.blocks = blocks
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        seq.status = Status.WAITING
        self.waiting.append(seq)

    def abort(self, seq: Sequence) -> None:
        """Drop a sequence wherever it is and free its blocks."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self._free(seq)
        seq.status = Status.FINISHED
        seq.finish_reason = seq.finish_reason or "abort"

    # ------------------------------------------------------------------ schedule

    def schedule(self) -> tuple[ScheduledBatch | None, Sequence | None]:
        """The next batch (None when there is nothing to run) and the waiting sequence that
        cannot fit even though nothing else runs (None when there is none)."""
        plan = Plan(self.max_num_batched_tokens)
        self._schedule_running(plan)
        stuck = self._admit_waiting(plan)
        if not plan.picked:
            return None, stuck
        return self._batch(plan), None

    def _schedule_running(self, plan: Plan) -> None:
        """1. Running sequences: one decode token each, or the next prefill chunk."""
        i = 0
        while i < len(self.running) and plan.budget > 0:
            seq = self.running[i]
            q = min(seq.num_uncomputed, plan.budget)
            made = self.blocks.append_slots(seq.block_table, seq.num_computed, q, seq.token_ids)
            if made is None:
                # Only a sequence not yet picked for this pass can give its blocks back; if
                # the victim is `seq` itself, running[i] is now the next one.
                self._preempt(self._victim(self.running[i:]))
                continue
            plan.copies += made
            plan.picked.append((seq, q))
            plan.budget -= q
            i += 1

    def _admit_waiting(self, plan: Plan) -> Sequence | None:
        """2. Waiting sequences, fairest owner first, while they fit."""
        while self.waiting and len(self.running) < self.max_num_seqs and plan.budget > 0:
            seq = self._next_waiting()
            if not self._reserve(seq, plan):
                if self.running or plan.picked:
                    return None  # wait for running sequences to finish or be preempted
                if self._evict_waiting(seq):
                    continue  # room was made: retry
                return seq
            self.waiting.remove(seq)
            seq.status = Status.RUNNING
            if seq.scheduled_at is None:
                seq.scheduled_at = time.perf_counter()
            self.running.append(seq)
            q = min(seq.num_uncomputed, plan.budget)
            plan.picked.append((seq, q))
            plan.budget -= q
        return None

    def _next_waiting(self) -> Sequence:
        running = Counter(s.owner for s in self.running)
        return min(self.waiting, key=lambda s: running[s.owner])  # min is stable: arrival order

    def _victim(self, candidates: list[Sequence]) -> Sequence:
        """The newest candidate of the owner with the most running sequences."""
        running = Counter(s.owner for s in self.running)
        widest = max(running[s.owner] for s in candidates)
        return next(s for s in reversed(candidates) if running[s.owner] == widest)

    def _reserve(self, seq: Sequence, plan: Plan) -> bool:
        """Give a waiting sequence its blocks (prefix-cache lookup for a fresh one)."""
        if not seq.block_table:
            allocation = self.blocks.allocate(seq.token_ids)
            if allocation is None:
                return False
            seq.block_table = list(allocation.block_ids)
            seq.num_computed = allocation.num_cached_tokens
            seq.num_hashed_blocks = allocation.num_cached_tokens // self.blocks.block_size
            if not seq.lost_kv:  # hits on re-admission are neither cached prompt nor recompute
                seq.cached_tokens += allocation.num_cached_tokens
            return True
        q = min(seq.num_uncomputed, plan.budget)
        made = self.blocks.append_slots(seq.block_table, seq.num_computed, q, seq.token_ids)
        if made is None:
            return False
        plan.copies += made
        return True

    def _batch(self, plan: Plan) -> ScheduledBatch:
        seqs, inputs, sample_rows = [], [], []
        for row, (seq, q) in enumerate(plan.picked):
            start = seq.num_computed
            if start < seq.start_len - 1:  # context tokens computed again count as recompute
                seq.recomputed_tokens += min(start + q, seq.start_len - 1) - start
            inputs.append(
                ForwardInput(
                    token_ids=tuple(seq.token_ids[start : start + q]),
                    num_computed=start,
                    block_table=tuple(seq.block_table),
                )
            )
            seqs.append(seq)
            if start + q == len(seq.token_ids) and not seq.is_prefill:
                sample_rows.append(row)
        return ScheduledBatch(seqs, inputs, list(plan.copies), sample_rows)

    def _evict_waiting(self, keep: Sequence) -> bool:
        """Nothing runs and `keep` does not fit: drop the blocks another waiting sequence holds
        (it will recompute, mostly from the prefix cache). False if there is none to drop."""
        others = [s for s in reversed(self.waiting) if s is not keep and s.block_table]
        victim = others[0] if others else keep if keep.block_table else None
        if victim is None:
            return False
        self._free(victim)
        self.num_preemptions += 1
        return True

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self._free(seq)
        seq.status = Status.WAITING
        self.waiting.insert(0, seq)
        self.num_preemptions += 1

    def _free(self, seq: Sequence) -> None:
        seq.lost_kv = True  # preempted or evicted (a finished sequence is never re-admitted)
        table = seq.forget_kv()
        if table:
            self.blocks.free(table)

    # ------------------------------------------------------------------ postprocess

    def postprocess(
        self,
        batch: ScheduledBatch,
        sampled: SampleOutput | None,
        decode: Callable[[list[int]], str],
    ) -> list[Sequence]:
        """Apply one pass's results; return what finished (prefills included)."""
        finished = []
        for seq, fwd in zip(batch.seqs, batch.inputs, strict=True):
            seq.num_computed += len(fwd.token_ids)
            seq.num_hashed_blocks = self.blocks.commit(
                seq.block_table, seq.token_ids, seq.num_computed, seq.num_hashed_blocks
            )
            if seq.is_prefill and seq.num_computed == len(seq.token_ids):
                seq.finish_reason = "length"
                finished.append(seq)
        for k, seq in enumerate(batch.samplers):
            self._append(seq, sampled, k)
            # The grammar moves first (a complete text or a dead end ends the sequence); then
            # the stop rule (EOS, stop strings, max_tokens -> "length").
            verdict = structured.advance(seq) or seq.stop.check(seq.new_token_ids, decode)
            if verdict is not None:
                seq.finish_reason, seq.stop_reason = self._reason(seq, *verdict), verdict[1]
                finished.append(seq)
        for seq in finished:
            seq.status = Status.FINISHED
            self.running.remove(seq)
        return finished

    def _append(self, seq: Sequence, sampled: SampleOutput, k: int) -> None:
        seq.token_ids.append(sampled.token_ids[k])
        seq.logprobs.append(sampled.logprobs[k])
        if seq.num_top_logprobs:
            pairs = zip(
                sampled.top_ids[k][: seq.num_top_logprobs],
                sampled.top_logprobs[k][: seq.num_top_logprobs],
                strict=True,
            )
            seq.top_logprobs.append(dict(pairs))

    def _reason(self, seq: Sequence, reason: str, stop_reason: int | str | None) -> str:
        """StopRule's (reason, stop_reason) in the protocol vocabulary: EOS is "eos", and a
        length stop at the model's context limit is "max_model_len"."""
        if reason == "stop" and stop_reason is None:
            return "eos"
        limit = self.max_model_len
        if reason == "length" and limit is not None and len(seq.token_ids) >= limit:
            return "max_model_len"
        return reason
