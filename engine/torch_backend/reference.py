"""The slow, obviously-correct reference decoder: plain Hugging Face `generate`.

It samples completions for text prompts with `transformers.AutoModelForCausalLM`, full
recompute, no paging, no sharing. ponder's own engine is checked against it token for token at
temperature 0, and the embedded model's quality is measured with it. It is deliberately simple
and deliberately not fast; nothing on a hot path calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


@dataclass(frozen=True, slots=True)
class ReferenceSample:
    text: str
    token_ids: tuple[int, ...]
    finished: bool  # ended with EOS (False: hit max_new_tokens)


class ReferenceDecoder:
    """Hugging Face model + tokenizer with a batched `sample` method."""

    def __init__(self, path: str | Path, *, device: str = "cpu", dtype=torch.float32):
        self.path = Path(path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.tokenizer.padding_side = "left"  # decoder-only batching needs left padding
        self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=dtype).to(device)
        self.model.eval()
        self.device = device

    @torch.inference_mode()
    def sample(
        self,
        prompts: Sequence[str],
        *,
        n: int = 1,
        temperature: float = 1.0,
        max_new_tokens: int = 256,
        seed: int = 0,
        batch_size: int = 16,
    ) -> list[list[ReferenceSample]]:
        """`n` completions per prompt; temperature 0 means greedy. Seeded per batch."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        eos = self.tokenizer.eos_token_id
        results: list[list[ReferenceSample]] = []
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            torch.manual_seed(seed + start)
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True).to(self.device)
            sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
            out = self.model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                num_return_sequences=n,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=eos,
                **(sampling if temperature > 0 else {"do_sample": False}),
            )
            new = out[:, enc.input_ids.shape[1] :]  # (len(chunk) * n, T_new)
            for i in range(len(chunk)):
                row_samples = []
                for j in range(n):
                    ids = new[i * n + j].tolist()
                    finished = eos in ids
                    if finished:
                        ids = ids[: ids.index(eos)]
                    text = self.tokenizer.decode(ids, skip_special_tokens=True)
                    row_samples.append(ReferenceSample(text, tuple(ids), finished))
                results.append(row_samples)
        return results
