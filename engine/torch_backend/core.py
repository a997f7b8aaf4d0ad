"""EngineCore: the synchronous heart of the engine, one forward pass per `step()`.

    step() = schedule -> run the model -> sample -> postprocess

It owns the block manager, the scheduler and the model runner, and is single-threaded by
contract: only the engine loop's thread touches it. It knows token ids, not text (the tokenizer's
decode is injected for stop strings) and not branches or searches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from ponder.engine.torch_backend.kv_cache import BlockManager, KVStats
from ponder.engine.torch_backend.model_runner import ModelRunner
from ponder.engine.torch_backend.sampling import SampleOutput, sample
from ponder.engine.torch_backend.scheduler import ScheduledBatch, Scheduler
from ponder.engine.torch_backend.sequence import Sequence


@dataclass(slots=True)
class CoreCounters:
    steps: int = 0
    forward_tokens: int = 0
    sampled_tokens: int = 0


class EngineCore:
    def __init__(
        self,
        runner: ModelRunner,
        blocks: BlockManager,
        decode: Callable[[list[int]], str],
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
    ):
        self.runner = runner
        self.blocks = blocks
        self.decode = decode
        self.scheduler = Scheduler(
            blocks, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens
        )
        self.counters = CoreCounters()

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    @property
    def kv_stats(self) -> KVStats:
        return self.blocks.stats

    def add(self, seq: Sequence) -> None:
        self.scheduler.add(seq)

    def abort(self, seq: Sequence) -> None:
        self.scheduler.abort(seq)

    def step(self) -> list[Sequence]:
        """Run one forward pass; return the sequences that finished (or failed) in it."""
        batch, failed = self.scheduler.schedule()
        if batch is None:
            return failed
        logits = self.runner.run(batch.inputs, batch.copies) if batch.inputs else None  # (B, V)
        sampled = self._sample(batch, logits)
        finished = self.scheduler.postprocess(batch, logits, sampled, self.decode)
        self.counters.steps += 1
        self.counters.forward_tokens += batch.num_tokens
        self.counters.sampled_tokens += len(batch.samplers)
        return failed + finished

    def _sample(self, batch: ScheduledBatch, logits: torch.Tensor | None) -> SampleOutput | None:
        rows = batch.samplers
        if not rows:
            return None
        parts = [logits[batch.sample_rows]] if batch.sample_rows else []  # (S1, V)
        parts += [seq.first_logits[None] for seq in batch.sample_only]  # S2 x (1, V)
        return sample(
            torch.cat(parts),
            [seq.params for seq in rows],
            [seq.generator for seq in rows],
            num_top=max(seq.num_top_logprobs for seq in rows),
        )
