"""CUDA decode steps: the Triton paged kernel, replayed from CUDA graphs.

A decode step (one new token per sequence) launches a few hundred small kernels; at small
batches the GPU idles between launches. `CudaDecoder` captures the whole forward (embedding,
every layer with `paged_decode.paged_decode_attention`, the logits head) once per padded batch
size into a CUDA graph over static input buffers, and each step copies the step's ids, positions,
slots, context lengths and block tables into those buffers and replays the graph.

Rows past the real batch (padding up to the captured size) write their key and value into a
scratch block the block manager never hands out and attend to that one slot, so they touch no
sequence's KV. Block tables are written only as wide as this step needs: the kernel reads the
first ceil(context_len / block_size) entries of a row, never the stale columns beyond.

With `graphs=False` the same kernels and padding run eagerly: for comparison, and on the CPU
under TRITON_INTERPRET=1, where the tests check this path against the portable kernels. Nothing
here schedules or samples; ModelRunner calls `run`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from ponder.engine.torch_backend.attention import PagedDecodeMetadata
from ponder.engine.torch_backend.model import CausalLM
from ponder.engine.torch_backend.paged_decode import choose_splits

GRAPH_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)


class CudaDecoder:
    def __init__(
        self,
        model: CausalLM,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
        *,
        block_size: int,
        max_blocks_per_seq: int,
        scratch_block: int,
        max_batch: int,
        graphs: bool = True,
    ):
        self.model, self.kv_caches = model, kv_caches
        self.block_size = block_size
        self.device = kv_caches[0][0].device
        self.scratch_slot = scratch_block * block_size
        self.processors = (
            torch.cuda.get_device_properties(self.device).multi_processor_count
            if self.device.type == "cuda"
            else os.cpu_count() or 1  # the CPU under TRITON_INTERPRET=1 (tests)
        )
        self.num_kv_heads = model.config.num_kv_heads
        self.sizes = [s for s in GRAPH_SIZES if s < max_batch] + [max_batch]
        self.use_graphs = graphs
        self.max_batch = max_batch
        on = dict(device=self.device)
        self.ids = torch.zeros(max_batch, dtype=torch.long, **on)
        self.positions = torch.zeros(max_batch, dtype=torch.long, **on)
        self.slots = torch.full((max_batch,), self.scratch_slot, dtype=torch.long, **on)
        self.lens = torch.ones(max_batch, dtype=torch.int32, **on)
        self.tables = torch.full(
            (max_batch, max_blocks_per_seq), scratch_block, dtype=torch.int32, **on
        )
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = None

    def _meta(self, size: int) -> PagedDecodeMetadata:
        splits = choose_splits(size, self.num_kv_heads, self.processors)
        return PagedDecodeMetadata(self.slots[:size], self.tables[:size], self.lens[:size], splits)

    def _forward(self, size: int) -> torch.Tensor:
        meta = self._meta(size)
        hidden = self.model(self.ids[:size], self.positions[:size], meta, self.kv_caches)
        return self.model.compute_logits(hidden)  # (size, V) float32

    def _capture(self, size: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):  # compile the Triton kernels outside the capture
            for _ in range(2):
                self._forward(size)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            logits = self._forward(size)
        if self.pool is None:
            self.pool = graph.pool()
        return graph, logits

    def _load(self, ids, positions, context_lens, block_tables, size: int) -> None:
        """Copy one step's inputs into the static buffers; rows [B, size) become padding."""
        batch = len(ids)
        width = max(-(-c // self.block_size) for c in context_lens)
        table_rows = [list(t[:width]) + [0] * (width - len(t[:width])) for t in block_tables]
        host = torch.tensor(
            [list(ids), list(positions), list(context_lens)], dtype=torch.long
        )  # (3, B)
        dev = host.to(self.device)
        self.ids[:batch] = dev[0]
        self.positions[:batch] = dev[1]
        self.lens[:batch] = dev[2].to(torch.int32)
        pos = dev[1]
        tables = torch.tensor(table_rows, dtype=torch.int32).to(self.device)
        self.tables[:batch, :width] = tables
        block = tables.gather(1, (pos // self.block_size)[:, None].to(torch.int64))[:, 0]
        self.slots[:batch] = block.to(torch.long) * self.block_size + pos % self.block_size
        if size > batch:  # padding rows: the scratch slot, a context of one token
            self.ids[batch:size] = 0
            self.positions[batch:size] = 0
            self.lens[batch:size] = 1
            self.slots[batch:size] = self.scratch_slot
            self.tables[batch:size, 0] = self.scratch_slot // self.block_size

    @torch.inference_mode()
    def run(
        self,
        ids: Sequence[int],
        positions: Sequence[int],
        context_lens: Sequence[int],
        block_tables: Sequence[Sequence[int]],
    ) -> torch.Tensor:
        """(B, V) float32 logits of one decode step; the new tokens' KV lands in the cache."""
        batch = len(ids)
        if batch > self.max_batch:
            raise ValueError(f"decode batch {batch} exceeds max_batch {self.max_batch}")
        size = next(s for s in self.sizes if s >= batch)
        self._load(ids, positions, context_lens, block_tables, size)
        if not self.use_graphs:  # the same kernels and padding, launched eagerly
            return self._forward(size)[:batch]
        if size not in self.graphs:
            self.graphs[size] = self._capture(size)
        graph, logits = self.graphs[size]
        graph.replay()
        return logits[:batch].clone()  # the next replay overwrites the static output
