"""Scheduler: continuous batching over every live sequence, with preemption by recompute.

`schedule()` picks the work of one forward pass: every running sequence first (a decode token,
or the next chunk of a long prefill), then waiting sequences while the token budget and the KV
pool allow. Mixed prefill and decode share the pass, since attention is ragged. When the pool
runs dry, the most recently started sequence is preempted: its blocks are freed (full blocks
keep their hash, so its recompute mostly hits the prefix cache) and it goes back to the front
of the queue. A sequence that cannot fit even in an otherwise idle pool fails with an error
instead of waiting forever.

`postprocess()` advances computed counts, commits full blocks to the prefix cache, appends the
sampled tokens and applies stop rules. It never frees a finished sequence's blocks: the engine
decides whether they become a branch or go back to the pool.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

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
    sample_only: list[Sequence]  # forks of a prefilled branch: sample from their first_logits

    @property
    def num_tokens(self) -> int:
        return sum(len(x.token_ids) for x in self.inputs)

    @property
    def samplers(self) -> list[Sequence]:
        """Every sequence that samples a token this step, in sampling order."""
        return [self.seqs[i] for i in self.sample_rows] + self.sample_only


class Scheduler:
    def __init__(self, blocks: BlockManager, *, max_num_seqs: int, max_num_batched_tokens: int):
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError(
                f"max_num_seqs ({max_num_seqs}) and max_num_batched_tokens "
                f"({max_num_batched_tokens}) must be >= 1"
            )
        self.blocks = blocks
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
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

    def schedule(self) -> tuple[ScheduledBatch | None, list[Sequence]]:
        """The next batch (None when idle) and the sequences that failed to fit at all."""
        budget = self.max_num_batched_tokens
        picked: list[tuple[Sequence, int]] = []
        copies: list[tuple[int, int]] = []

        # 1. Running sequences: one decode token each, or the next prefill chunk.
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            q = min(seq.num_uncomputed, budget)
            made = self.blocks.append_slots(seq.block_table, seq.num_computed, q)
            if made is None:
                victim = self.running[-1]
                self._preempt(victim)
                if victim is seq:
                    break
                continue
            copies += made
            picked.append((seq, q))
            budget -= q
            i += 1

        # 2. Waiting sequences, in order, while they fit.
        failed: list[Sequence] = []
        sample_only: list[Sequence] = []
        while self.waiting and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if seq.samples_without_forward:  # needs neither tokens of budget nor slots yet
                self.waiting.popleft()
                seq.status = Status.RUNNING
                self.running.append(seq)
                sample_only.append(seq)
                continue
            if budget == 0:
                break
            if not self._reserve(seq, budget, copies):
                if self.running or picked:
                    break  # wait for running sequences to finish or be preempted
                if self._evict_waiting(seq):
                    continue  # room was made: retry the same sequence
                failed.append(self.waiting.popleft())
                self._fail(failed[-1])
                continue
            self.waiting.popleft()
            seq.status = Status.RUNNING
            self.running.append(seq)
            q = min(seq.num_uncomputed, budget)
            picked.append((seq, q))
            budget -= q

        if not picked and not sample_only:
            return None, failed
        return self._batch(picked, copies, sample_only), failed

    def _reserve(self, seq: Sequence, budget: int, copies: list[tuple[int, int]]) -> bool:
        """Give a waiting sequence its blocks (prefix-cache lookup for a fresh one)."""
        if not seq.block_table:
            allocation = self.blocks.allocate(seq.token_ids)
            if allocation is None:
                return False
            seq.block_table = list(allocation.block_ids)
            seq.num_computed = allocation.num_cached_tokens
            seq.cached_tokens += allocation.num_cached_tokens
            return True
        q = min(seq.num_uncomputed, budget)
        made = self.blocks.append_slots(seq.block_table, seq.num_computed, q)
        if made is None:
            return False
        copies += made
        return True

    def _batch(self, picked: list[tuple[Sequence, int]], copies, sample_only) -> ScheduledBatch:
        seqs, inputs, sample_rows = [], [], []
        for row, (seq, q) in enumerate(picked):
            start = seq.num_computed
            # Context tokens computed again (beyond the pending last token) count as recompute.
            seq.recomputed_tokens += max(0, min(start + q, seq.start_len - 1) - max(start, 0))
            inputs.append(
                ForwardInput(
                    token_ids=tuple(seq.token_ids[start : start + q]),
                    num_computed=start,
                    block_table=tuple(seq.block_table),
                )
            )
            seqs.append(seq)
            if start + q == len(seq.token_ids) and not seq.is_prefill_job:
                sample_rows.append(row)
        return ScheduledBatch(seqs, inputs, list(copies), sample_rows, sample_only)

    def _evict_waiting(self, keep: Sequence) -> bool:
        """Nothing runs and `keep` does not fit: drop the blocks another waiting sequence holds
        (it will recompute, mostly from the prefix cache). False if there is none to drop."""
        for seq in reversed(self.waiting):
            if seq is not keep and seq.block_table:
                self._free(seq)
                seq.num_computed = 0
                seq.first_logits = None
                self.num_preemptions += 1
                return True
        if keep.block_table:  # its own shared blocks are not enough: recompute from scratch
            self._free(keep)
            keep.num_computed = 0
            keep.first_logits = None
            self.num_preemptions += 1
            return True
        return False

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self._free(seq)
        seq.num_computed = 0
        seq.first_logits = None
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def _free(self, seq: Sequence) -> None:
        if seq.block_table:
            self.blocks.free(seq.block_table)
            seq.block_table = []

    def _fail(self, seq: Sequence) -> None:
        stats = self.blocks.stats
        seq.status = Status.FINISHED
        seq.finish_reason = "error"
        seq.error = (
            f"the KV pool cannot hold this sequence ({len(seq.token_ids)} tokens): "
            f"{stats.used} of {stats.total} blocks are pinned by live branches or requests; "
            "release branches or start the engine with more KV blocks"
        )
        self._free(seq)

    # ------------------------------------------------------------------ postprocess

    def postprocess(
        self,
        batch: ScheduledBatch,
        logits,
        sampled: SampleOutput | None,
        decode: Callable[[list[int]], str],
    ) -> list[Sequence]:
        """Apply one pass's results (logits: (len(batch.seqs), V)); return what finished."""
        finished = []
        for row, (seq, fwd) in enumerate(zip(batch.seqs, batch.inputs, strict=True)):
            seq.num_computed += len(fwd.token_ids)
            self.blocks.commit(seq.block_table, seq.token_ids, seq.num_computed)
            if seq.is_prefill_job and seq.num_computed == len(seq.token_ids):
                seq.last_logits = logits[row].clone()  # (V,) shared by every fork
                seq.finish_reason = "prefilled"
                finished.append(seq)
        for k, seq in enumerate(batch.samplers):
            seq.first_logits = None
            seq.token_ids.append(sampled.token_ids[k])
            seq.logprobs.append(sampled.logprobs[k])
            if seq.num_top_logprobs:
                pairs = zip(
                    sampled.top_ids[k][: seq.num_top_logprobs],
                    sampled.top_logprobs[k][: seq.num_top_logprobs],
                    strict=True,
                )
                seq.top_logprobs.append(dict(pairs))
            verdict = seq.stop.check(seq.new_token_ids, decode)
            if verdict is not None:
                seq.finish_reason, seq.stop_reason = verdict
                finished.append(seq)
        for seq in finished:
            seq.status = Status.FINISHED
            self.running.remove(seq)
        return finished
