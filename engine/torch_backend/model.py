"""CausalLM: ponder's own forward pass for Llama, Qwen2 and Qwen3 checkpoints.

Reads a Hugging Face folder (config.json + safetensors, single or sharded) and runs the decoder
over a ragged batch of new tokens with attention over the paged KV cache (engine/attention.py).
No Hugging Face modeling code runs here; the slow reference in engine/reference.py does, and the
tests check the two agree. Supported: RMSNorm, default or llama3-scaled rotary embeddings,
grouped-query attention, q/k/v biases (Qwen2, or Llama's attention_bias), Qwen3's per-head
q/k norms, SwiGLU MLP, tied or separate output embeddings (model_config.py reads the config;
anything else is a ValueError).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from ponder.engine.torch_backend import cpu_kernels
from ponder.engine.torch_backend.attention import (
    AttentionMetadata,
    PagedDecodeMetadata,
    paged_attention,
    write_slots,
)
from ponder.engine.torch_backend.cascade import DecodeMetadata, cascade_attention
from ponder.engine.torch_backend.cpu_kernels import CpuDecodeMetadata
from ponder.engine.torch_backend.model_config import ModelConfig, rope_inv_freq
from safetensors.torch import load_file
from torch import nn


def fused_ops():
    """The Triton kernels (fused_ops.py), imported on first use: Triton is optional."""
    from ponder.engine.torch_backend import fused_ops as ops

    return ops


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (N, H, D); cos: (N, 1, D); sin: (N, 1, D) with its first half negated (`rope_tables`).

    Rotate-half rotary embedding, x * cos + rotate_half(x) * sin, where rotate_half(x) =
    (-x2, x1): rolling x by half a head gives (x2, x1) and the sign lives in `sin`."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), sin)


def rope_tables(positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype):
    """cos, signed sin: (N, 1, D) each, for `apply_rope`."""
    freqs = positions.float()[:, None] * inv_freq[None, :]  # (N, D/2)
    angles = torch.cat((freqs, freqs), dim=-1)[:, None, :]  # (N, 1, D)
    sin = angles.sin()
    sin[..., : freqs.shape[-1]].neg_()
    return angles.cos().to(dtype), sin.to(dtype)


PACKED_ROWS = 64  # decode steps up to this many rows multiply by packed weights (CPU)


def linear(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """module(x); for a few rows on the CPU, from the weight packed in strips when there is one
    (CausalLM.use_cpu_kernels: the weights stream front to back, cpu_kernels.packed_linear)."""
    packed = module.__dict__.get("packed")
    if packed is not None and x.shape[0] <= PACKED_ROWS:
        return cpu_kernels.packed_linear(x, packed, module.bias)
    return module.forward(x)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.triton = False  # set by CausalLM.use_triton
        self.cpu = False  # set by CausalLM.use_cpu_kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if dtype == torch.float32:  # one fused op; the same arithmetic as the lines below
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)

    def add(self, x: torch.Tensor, residual: torch.Tensor | None):
        """residual = residual + x (x alone when None), then this norm of it: (normed, residual).
        The residual stream's add fused with the next norm (one Triton kernel on CUDA)."""
        if self.triton:
            return fused_ops().add_rms_norm(x, residual, self.weight, self.eps)
        if self.cpu:
            return cpu_kernels.add_rms_norm(x, residual, self.weight, self.eps)
        residual = x if residual is None else residual + x
        return self(residual), residual


class Attention(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.c = c
        self.q_proj = nn.Linear(c.hidden_size, c.num_heads * c.head_dim, bias=c.qkv_bias)
        self.k_proj = nn.Linear(c.hidden_size, c.num_kv_heads * c.head_dim, bias=c.qkv_bias)
        self.v_proj = nn.Linear(c.hidden_size, c.num_kv_heads * c.head_dim, bias=c.qkv_bias)
        self.o_proj = nn.Linear(c.num_heads * c.head_dim, c.hidden_size, bias=c.o_bias)
        self.qkv_proj: nn.Linear | None = None  # q, k, v stacked: set by `fuse`
        self.triton = False  # set by CausalLM.use_triton
        self.cpu = False  # set by CausalLM.use_cpu_kernels
        if c.qk_norm:
            self.q_norm = RMSNorm(c.head_dim, c.rms_norm_eps)
            self.k_norm = RMSNorm(c.head_dim, c.rms_norm_eps)

    def fuse(self) -> None:
        """Stack q/k/v into one projection (one matmul per step instead of three); the
        separate modules, which carry the checkpoint's names, are dropped."""
        parts = (self.q_proj, self.k_proj, self.v_proj)
        fused = _stack_linears(parts)
        del self.q_proj, self.k_proj, self.v_proj
        self.qkv_proj = fused

    def forward(self, x, cos, sin, kv, meta: AttentionMetadata) -> torch.Tensor:
        c = self.c
        n = x.shape[0]
        q_size, kv_size = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        qkv = linear(self.qkv_proj, x)  # (N, (Hq + 2 Hkv) D)
        scale = c.head_dim**-0.5
        if self.triton and not c.qk_norm:
            return self.o_proj(self._triton_attention(qkv, cos, sin, kv, meta, scale))
        v = qkv[:, q_size + kv_size :].view(n, c.num_kv_heads, c.head_dim)  # (N, Hkv, D)
        if c.qk_norm:
            q = self.q_norm(qkv[:, :q_size].view(n, c.num_heads, c.head_dim))
            k = self.k_norm(qkv[:, q_size : q_size + kv_size].view(n, c.num_kv_heads, c.head_dim))
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        elif self.cpu:  # rotate q and k heads in place, one call
            cpu_kernels.rope_(qkv, cos, sin, c.num_heads + c.num_kv_heads, c.head_dim)
            q = qkv[:, :q_size].view(n, c.num_heads, c.head_dim)
            k = qkv[:, q_size : q_size + kv_size].view(n, c.num_kv_heads, c.head_dim)
        else:  # rotate q and k heads in one go
            qk = apply_rope(qkv[:, : q_size + kv_size].view(n, -1, c.head_dim), cos, sin)
            q, k = qk[:, : c.num_heads], qk[:, c.num_heads :]
        if isinstance(meta, CpuDecodeMetadata):  # CPU: the C kernel reads the blocks in place
            out = cpu_kernels.paged_decode(q, k, v, kv[0], kv[1], meta, scale)
        elif isinstance(meta, PagedDecodeMetadata):  # CUDA: Triton reads the blocks in place
            from ponder.engine.torch_backend.paged_decode import paged_decode_attention

            write_slots(kv[0], kv[1], meta.slot_mapping, k, v)
            out = paged_decode_attention(q, kv[0], kv[1], meta, scale)
        else:
            attend = cascade_attention if isinstance(meta, DecodeMetadata) else paged_attention
            out = attend(q, k, v, kv[0], kv[1], meta, scale=scale)
        return linear(self.o_proj, out.reshape(n, q_size))  # (N, hidden)

    def _triton_attention(self, qkv, cos, sin, kv, meta, scale) -> torch.Tensor:
        """Rotary embedding (and, in a decode step, the KV write) in one kernel, in place in
        qkv; then the paged decode kernel, or the portable kernels for prefill. -> (N, Hq D)"""
        from ponder.engine.torch_backend.paged_decode import paged_decode_attention

        c, n = self.c, qkv.shape[0]
        q_size, kv_size = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        decode = isinstance(meta, PagedDecodeMetadata)
        cache = (kv[0], kv[1], meta.slot_mapping) if decode else None
        fused_ops().rope_(qkv, cos, sin, c.num_heads, c.num_kv_heads, c.head_dim, cache)
        q = qkv[:, :q_size].view(n, c.num_heads, c.head_dim)
        if decode:
            out = paged_decode_attention(q, kv[0], kv[1], meta, scale)
        else:
            k = qkv[:, q_size : q_size + kv_size].view(n, c.num_kv_heads, c.head_dim)
            v = qkv[:, q_size + kv_size :].view(n, c.num_kv_heads, c.head_dim)
            attend = cascade_attention if isinstance(meta, DecodeMetadata) else paged_attention
            out = attend(q, k, v, kv[0], kv[1], meta, scale=scale)
        return out.reshape(n, q_size)


class MLP(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=c.mlp_bias)
        self.gate_up_proj: nn.Linear | None = None  # gate and up stacked: set by `fuse`
        self.triton = False  # set by CausalLM.use_triton
        self.cpu = False  # set by CausalLM.use_cpu_kernels

    def fuse(self) -> None:
        fused = _stack_linears((self.gate_proj, self.up_proj))
        del self.gate_proj, self.up_proj
        self.gate_up_proj = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.triton:
            return self.down_proj(fused_ops().silu_mul(self.gate_up_proj(x)))
        if self.cpu:
            return linear(self.down_proj, cpu_kernels.silu_mul(linear(self.gate_up_proj, x)))
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate).mul_(up))


def _stack_linears(parts: tuple[nn.Linear, ...]) -> nn.Linear:
    """One Linear whose output is the parts' outputs concatenated (weights moved, not copied
    twice: the new module is built on the meta device and takes the concatenated tensors)."""
    first = parts[0]
    with torch.device("meta"):
        fused = nn.Linear(
            first.in_features, sum(p.out_features for p in parts), bias=first.bias is not None
        )
    fused.weight = nn.Parameter(torch.cat([p.weight for p in parts]), requires_grad=False)
    if first.bias is not None:
        fused.bias = nn.Parameter(torch.cat([p.bias for p in parts]), requires_grad=False)
    return fused


class DecoderLayer(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.self_attn = Attention(c)
        self.mlp = MLP(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, x, residual, cos, sin, kv, meta):
        """The residual stream is carried beside each layer's output and added by the next
        norm: (output, residual) -> (output, residual), with residual None at the first layer."""
        h, residual = self.input_layernorm.add(x, residual)
        h, residual = self.post_attention_layernorm.add(
            self.self_attn.forward(h, cos, sin, kv, meta), residual
        )
        return self.mlp.forward(h), residual


class CausalLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.register_buffer("inv_freq", rope_inv_freq(config), persistent=False)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype=torch.float32, device="cpu") -> CausalLM:
        path = Path(path)
        raw = json.loads((path / "config.json").read_text())
        config = ModelConfig.from_hf(raw, str(path))
        with torch.device("meta"):
            model = cls(config)
            for layer in model.layers:  # fused layout first: each weight is concatenated once
                layer.self_attn.fuse()
                layer.mlp.fuse()
        weights = _read_safetensors(path)
        state, used = {}, {"lm_head.weight", "model.embed_tokens.weight"}
        for name, param in model.named_parameters():
            try:
                keys, value = model._checkpoint_tensor(name, weights, param.shape)
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
            state[name] = value.to(dtype)
            used.update(keys)
        unused = sorted(k for k in weights if k not in used and "rotary_emb" not in k)
        if unused:  # a tensor we have no slot for means the architecture is not what we run
            raise ValueError(f"{path}: checkpoint tensors this model does not use: {unused[:5]}")
        model.load_state_dict(state, assign=True)
        model.inv_freq = rope_inv_freq(config)
        model = model.to(device).eval()
        if model.inv_freq.device.type == "cpu":
            model.column_major_weights()
        return model

    def _checkpoint_tensor(
        self, name: str, weights: dict[str, torch.Tensor], shape: torch.Size
    ) -> tuple[list[str], torch.Tensor]:
        """The checkpoint tensors (Hugging Face names) that make up parameter `name` and their
        concatenation (several for the fused q/k/v and gate/up projections), checked against
        the parameter's shape."""
        fused = {
            "qkv_proj": ("q_proj", "k_proj", "v_proj"),
            "gate_up_proj": ("gate_proj", "up_proj"),
        }
        parts = name.split(".")
        if len(parts) >= 2 and parts[-2] in fused:
            names = [".".join([*parts[:-2], p, parts[-1]]) for p in fused[parts[-2]]]
        else:
            names = [name]
        keys = []
        for n in names:
            key = n if n == "lm_head.weight" else f"model.{n}"
            if key not in weights and n == "lm_head.weight" and self.config.tie_word_embeddings:
                key = "model.embed_tokens.weight"
            if key not in weights:
                raise ValueError(f"checkpoint has no tensor {key!r} (needed for {name})")
            keys.append(key)
        value = torch.cat([weights[k] for k in keys]) if len(keys) > 1 else weights[keys[0]]
        if tuple(value.shape) != tuple(shape):
            raise ValueError(
                f"tensor {' + '.join(keys)} has shape {tuple(value.shape)}, expected "
                f"{tuple(shape)} for {name}"
            )
        return keys, value

    @torch.no_grad()
    def column_major_weights(self) -> None:
        """Store each decoder linear's (out, in) weight column-major, i.e. as the transpose of a
        contiguous (in, out) matrix: `F.linear` then multiplies x @ W^T without a transposed
        read, which MKL runs faster for a decode step's few rows (bench/matmul_layout.py: the
        matmul shapes of the embedded model and SmolLM2 at 16 and 64 rows). Shapes, names and
        in-place loads are unchanged. The logits head keeps its layout (tied to the embedding
        table, which gathers rows)."""
        for layer in self.layers:
            for module in layer.modules():
                if isinstance(module, nn.Linear):
                    module.weight = nn.Parameter(
                        module.weight.t().contiguous().t(), requires_grad=False
                    )

    @torch.no_grad()
    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Copy a Hugging Face state dict (e.g. a training model's `state_dict()`) into this
        model in place; every parameter must be covered, shapes must match. All or nothing:
        every tensor is found and checked before the first parameter changes."""
        params = dict(self.named_parameters())
        values = {n: self._checkpoint_tensor(n, weights, p.shape)[1] for n, p in params.items()}
        for name, value in values.items():
            params[name].copy_(value)
        if any(m.__dict__.get("packed") is not None for m in self.modules()):
            self._pack_linears()  # the packed copies follow the new weights

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttentionMetadata | DecodeMetadata | PagedDecodeMetadata | CpuDecodeMetadata,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        """input_ids, positions: (N,) -> hidden states (N, hidden). Submodules are called
        through `.forward`: no hooks are registered here, and `nn.Module.__call__` costs ~1-2 us
        a call, 4-6% of a small model's decode step."""
        x = self.embed_tokens(input_ids)  # (N, hidden)
        cos, sin = rope_tables(positions, self.inv_freq, x.dtype)
        residual = None
        for layer, kv in zip(self.layers, kv_caches, strict=True):  # forward: no hooks here
            x, residual = layer.forward(x, residual, cos, sin, kv, meta)
        return self.norm.add(x, residual)[0]

    def use_triton(self, on: bool = True) -> CausalLM:
        """Run norms, rotary embeddings, the KV write and SiLU-and-multiply as fused Triton
        kernels (fused_ops.py): on CUDA when asked (Engine(fused_kernels=True): checked under
        Triton's interpreter, not yet measured on a GPU), on the CPU only under
        TRITON_INTERPRET=1 (tests)."""
        for module in self.modules():
            if isinstance(module, RMSNorm | Attention | MLP):
                module.triton = on
        return self

    def use_cpu_kernels(self, on: bool = True) -> CausalLM:
        """Run the residual add + RMSNorm, rotary embeddings and SiLU-and-multiply as C kernels
        (cpu_kernels.py; fp32 on the CPU, inference only: no autograd through them), and keep a
        copy of each linear's weight (the logits head's too) packed in 64-column strips for
        decode steps: as much memory again as those weights (SmolLM2-135M: +540 MB); output
        sizes not a multiple of 64 keep MKL."""
        for module in self.modules():
            if isinstance(module, RMSNorm | Attention | MLP):
                module.cpu = on
        self._pack_linears(on)
        return self

    @torch.no_grad()
    def _pack_linears(self, on: bool = True) -> None:
        for module in [*self.layers.modules(), self.lm_head]:
            if isinstance(module, nn.Linear):
                fits = on and module.out_features % cpu_kernels.STRIP == 0
                module.__dict__["packed"] = cpu_kernels.pack_weight(module.weight) if fits else None

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return linear(self.lm_head, hidden).float()


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (path / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise ValueError(f"{path}: no model.safetensors or model.safetensors.index.json")
    weights: dict[str, torch.Tensor] = {}
    for name in files:
        weights.update(load_file(str(path / name)))
    return weights
