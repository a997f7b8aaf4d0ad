"""CausalLM: ponder's own forward pass for Llama, Qwen2 and Qwen3 checkpoints.

Reads a Hugging Face folder (config.json + safetensors, single or sharded) and runs the decoder
over a ragged batch of new tokens with attention over the paged KV cache (engine/attention.py).
No Hugging Face modeling code runs here; the slow reference in engine/reference.py does, and the
tests check the two agree. Supported: RMSNorm, default or llama3-scaled rotary embeddings,
grouped-query attention, q/k/v biases (Qwen2, or Llama's attention_bias), Qwen3's per-head
q/k norms, SwiGLU MLP, tied or separate output embeddings. Anything else is a ValueError.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from ponder.engine.attention import AttentionMetadata, paged_attention
from safetensors.torch import load_file
from torch import nn

SUPPORTED = ("llama", "qwen2", "qwen3")


@dataclass(frozen=True, slots=True)
class ModelConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict | None
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool
    tie_word_embeddings: bool
    max_position_embeddings: int

    @classmethod
    def from_hf(cls, raw: dict, where: str) -> ModelConfig:
        kind = raw.get("model_type")
        if kind not in SUPPORTED:
            raise ValueError(
                f"{where}: model_type {kind!r} is not supported; use one of {SUPPORTED}"
            )
        rope = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
        theta = rope.get("rope_theta", raw.get("rope_theta", 10000.0))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", "llama3"):
            raise ValueError(f"{where}: rope type {rope_type!r} is not supported (default, llama3)")
        if raw.get("hidden_act", "silu") != "silu":
            raise ValueError(
                f"{where}: hidden_act {raw.get('hidden_act')!r} is not supported (silu)"
            )
        if raw.get("use_sliding_window") or (kind == "llama" and raw.get("sliding_window")):
            raise ValueError(f"{where}: sliding-window attention is not supported")
        if raw.get("partial_rotary_factor", 1.0) != 1.0:
            raise ValueError(f"{where}: partial rotary embeddings are not supported")
        heads = raw["num_attention_heads"]
        attention_bias = bool(raw.get("attention_bias", False))
        return cls(
            model_type=kind,
            vocab_size=raw["vocab_size"],
            hidden_size=raw["hidden_size"],
            intermediate_size=raw["intermediate_size"],
            num_layers=raw["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=raw.get("num_key_value_heads") or heads,
            head_dim=raw.get("head_dim") or raw["hidden_size"] // heads,
            rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
            rope_theta=float(theta),
            rope_scaling=rope if rope_type == "llama3" else None,
            qkv_bias=kind == "qwen2" or attention_bias,
            o_bias=kind != "qwen2" and attention_bias,  # Qwen2 biases q/k/v only
            mlp_bias=bool(raw.get("mlp_bias", False)),
            qk_norm=kind == "qwen3",
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            max_position_embeddings=raw.get("max_position_embeddings", 2048),
        )


def rope_inv_freq(config: ModelConfig) -> torch.Tensor:
    dim = config.head_dim
    inv = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    s = config.rope_scaling
    if s is not None:  # llama3: stretch long wavelengths, keep short ones, blend in between
        factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
        old_len = s["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old_len / low, inv / factor, inv)
        smooth = (old_len / wavelen - low) / (high - low)
        mid = (1 - smooth) * scaled / factor + smooth * scaled
        is_mid = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        inv = torch.where(is_mid, mid, scaled)
    return inv.float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (N, H, D); cos/sin: (N, 1, D)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Attention(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.c = c
        self.q_proj = nn.Linear(c.hidden_size, c.num_heads * c.head_dim, bias=c.qkv_bias)
        self.k_proj = nn.Linear(c.hidden_size, c.num_kv_heads * c.head_dim, bias=c.qkv_bias)
        self.v_proj = nn.Linear(c.hidden_size, c.num_kv_heads * c.head_dim, bias=c.qkv_bias)
        self.o_proj = nn.Linear(c.num_heads * c.head_dim, c.hidden_size, bias=c.o_bias)
        if c.qk_norm:
            self.q_norm = RMSNorm(c.head_dim, c.rms_norm_eps)
            self.k_norm = RMSNorm(c.head_dim, c.rms_norm_eps)

    def forward(self, x, cos, sin, kv, meta: AttentionMetadata) -> torch.Tensor:
        c = self.c
        n = x.shape[0]
        q = self.q_proj(x).view(n, c.num_heads, c.head_dim)  # (N, Hq, D)
        k = self.k_proj(x).view(n, c.num_kv_heads, c.head_dim)  # (N, Hkv, D)
        v = self.v_proj(x).view(n, c.num_kv_heads, c.head_dim)
        if c.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = paged_attention(q, k, v, kv[0], kv[1], meta, scale=c.head_dim**-0.5)
        return self.o_proj(out.reshape(n, c.num_heads * c.head_dim))  # (N, hidden)


class MLP(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=c.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.self_attn = Attention(c)
        self.mlp = MLP(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, x, cos, sin, kv, meta):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, kv, meta)
        return x + self.mlp(self.post_attention_layernorm(x))


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
        weights = _read_safetensors(path)
        state = {}
        for name, param in model.named_parameters():
            key = name if name == "lm_head.weight" else f"model.{name}"
            if key not in weights and name == "lm_head.weight" and config.tie_word_embeddings:
                key = "model.embed_tokens.weight"
            if key not in weights:
                raise ValueError(f"{path}: checkpoint has no tensor {key!r} (needed for {name})")
            if tuple(weights[key].shape) != tuple(param.shape):
                raise ValueError(
                    f"{path}: tensor {key} has shape {tuple(weights[key].shape)}, "
                    f"expected {tuple(param.shape)}"
                )
            state[name] = weights[key].to(dtype)
        used = {f"model.{n}" for n in state} | {"lm_head.weight", "model.embed_tokens.weight"}
        unused = sorted(k for k in weights if k not in used and "rotary_emb" not in k)
        if unused:  # a tensor we have no slot for means the architecture is not what we run
            raise ValueError(f"{path}: checkpoint tensors this model does not use: {unused[:5]}")
        model.load_state_dict(state, assign=True)
        model.inv_freq = rope_inv_freq(config)
        return model.to(device).eval()

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttentionMetadata,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        """input_ids, positions: (N,) -> hidden states (N, hidden)."""
        x = self.embed_tokens(input_ids)  # (N, hidden)
        freqs = positions.float()[:, None] * self.inv_freq[None, :]  # (N, D/2)
        angles = torch.cat((freqs, freqs), dim=-1)[:, None, :]  # (N, 1, D)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        for layer, kv in zip(self.layers, kv_caches, strict=True):
            x = layer(x, cos, sin, kv, meta)
        return self.norm(x)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()


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
