"""ModelConfig: the architecture ponder's CausalLM runs, read from a Hugging Face config.json.

Llama, Qwen2 and Qwen3 configs map onto one set of fields (grouped-query heads, biases, Qwen3's
q/k norms, tied embeddings, default or llama3-scaled rotary frequencies); anything the model
cannot run is a ValueError that names the field. `rope_inv_freq` derives the rotary
frequencies from it. No weights here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

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
