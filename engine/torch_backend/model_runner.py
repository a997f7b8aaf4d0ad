"""ModelRunner: owns the KV cache tensors and runs one forward pass over a ragged batch.

Input: one ForwardInput per sequence (the new tokens, where they start, the block table that
covers them) plus the copy-on-write block pairs to apply first. Output: float32 logits at each
input's last new token. No scheduling, no sampling, no block allocation policy.

Kernels: prefill and mixed steps use the portable dense kernel (attention.py). Decode steps use,
on the CPU in fp32, the C kernel (cpu_kernels.py) where a C compiler is found, else cascade
attention (cascade.py); on CUDA, where Triton is installed, the paged kernel replayed from CUDA
graphs (cuda_decode.py). The cache holds one block more than the
block manager hands out: a scratch block that padding rows of a captured graph write into.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from ponder.engine.torch_backend.attention import build_metadata, copy_blocks, make_kv_cache
from ponder.engine.torch_backend.cascade import Workspace, plan_decode
from ponder.engine.torch_backend.model import CausalLM
from ponder.engine.torch_backend.model_config import ModelConfig


@dataclass(frozen=True, slots=True)
class ForwardInput:
    token_ids: tuple[int, ...]  # new tokens whose KV to compute this step (>= 1)
    num_computed: int  # tokens of this sequence already in the cache = position of token_ids[0]
    block_table: tuple[int, ...]  # covers positions [0, num_computed + len(token_ids))


class ModelRunner:
    def __init__(
        self,
        model: CausalLM,
        *,
        num_blocks: int,
        block_size: int,
        max_num_seqs: int = 256,
        cuda_graphs: bool = True,
        cpu_kernel: bool = True,
    ):
        self.model = model
        self.block_size = block_size
        self.num_blocks = num_blocks
        c = model.config
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.kv_caches = make_kv_cache(
            c.num_layers,
            num_blocks + 1,  # + the scratch block (index num_blocks), never handed out
            block_size,
            c.num_kv_heads,
            c.head_dim,
            self.dtype,
            self.device,
        )
        self.workspace = Workspace(self.device, self.dtype)
        self.cpu_planner = None  # decode through the C kernel (cpu_kernels.py) when it loads
        self.native_sampling = False  # plain rows sampled in C (sampling.sample(native=True))
        if self.device.type == "cpu" and self.dtype == torch.float32 and cpu_kernel:
            from ponder.engine.torch_backend import cpu_kernels

            if cpu_kernels.available()[0]:
                self.cpu_planner = cpu_kernels.CpuDecodePlanner(block_size, c.num_kv_heads)
                model.use_cpu_kernels()
                self.native_sampling = True
        self.cuda_decoder = None
        if self.device.type == "cuda" and importlib.util.find_spec("triton") is not None:
            from ponder.engine.torch_backend.cuda_decode import CudaDecoder

            self.cuda_decoder = CudaDecoder(
                model,
                self.kv_caches,
                block_size=block_size,
                max_blocks_per_seq=-(-c.max_position_embeddings // block_size),
                scratch_block=num_blocks,
                max_batch=max_num_seqs,
                graphs=cuda_graphs,
            )

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    @staticmethod
    def bytes_per_block(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
        element = torch.finfo(dtype).bits // 8
        return 2 * config.num_layers * block_size * config.num_kv_heads * config.head_dim * element

    def _validate(self, inputs: Sequence[ForwardInput]) -> None:
        if not inputs:
            raise ValueError("ModelRunner.run needs at least one input")
        for i, x in enumerate(inputs):
            end = x.num_computed + len(x.token_ids)
            if not x.token_ids or x.num_computed < 0:
                raise ValueError(f"input {i}: needs >= 1 new token and num_computed >= 0")
            if len(x.block_table) * self.block_size < end:
                raise ValueError(
                    f"input {i}: block table of {len(x.block_table)} blocks cannot "
                    f"hold {end} tokens at block size {self.block_size}"
                )
            if min(x.block_table) < 0 or max(x.block_table) >= self.num_blocks:  # C-level scans
                raise ValueError(f"input {i}: block id outside [0, {self.num_blocks})")

    @torch.inference_mode()
    def run(
        self, inputs: Sequence[ForwardInput], copies: Sequence[tuple[int, int]] = ()
    ) -> torch.Tensor:
        """CoW copies, then one forward; (B, V) float32 logits at each input's last token."""
        self._validate(inputs)
        copy_blocks(self.kv_caches, copies)
        query_lens = [len(x.token_ids) for x in inputs]
        tables = [x.block_table for x in inputs]
        if sum(query_lens) == len(inputs):  # pure decode: cascade over shared prompts
            ids = [x.token_ids[0] for x in inputs]
            positions = [x.num_computed for x in inputs]
            context_lens = [p + 1 for p in positions]
            if self.cuda_decoder is not None and len(inputs) <= self.cuda_decoder.max_batch:
                return self.cuda_decoder.run(ids, positions, context_lens, tables)
            if self.cpu_planner is not None:
                meta = self.cpu_planner.plan(context_lens, tables)
            else:
                meta = plan_decode(context_lens, tables, self.block_size, self.workspace)
        else:
            ids, positions = [], []
            for x in inputs:
                ids += x.token_ids
                positions += range(x.num_computed, x.num_computed + len(x.token_ids))
            context_lens = [x.num_computed + q for x, q in zip(inputs, query_lens, strict=True)]
            meta = build_metadata(query_lens, context_lens, tables, self.block_size, self.device)
        # One host-to-device copy for both: (2, N) -> ids (N,), positions (N,)
        ids_t, pos_t = torch.tensor([ids, positions], dtype=torch.long, device=self.device)
        hidden = self.model(ids_t, pos_t, meta, self.kv_caches)  # (N, hidden)
        if len(ids) == len(inputs):
            return self.model.compute_logits(hidden)  # (B, V): one token per input
        last = torch.tensor(query_lens, device=self.device).cumsum(0) - 1  # (B,)
        return self.model.compute_logits(hidden[last])  # (B, V)
