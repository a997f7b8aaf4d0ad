"""Outcome reward models (ORMs) from Hugging Face checkpoints, and the helpers every learned
verifier shares (token lookup, loading, padded length-sorted batches).

    OutcomeRewardModel(path).score(prompts, candidates) -> [[score], ...]

An ORM is a sequence-classification checkpoint (`AutoModelForSequenceClassification`). One label:
the score is the raw logit (an unbounded reward, as trained reward models emit; rank-only uses
such as best-of-N are unaffected, and a caller wanting [0, 1] applies a sigmoid); two labels:
P(label 1). The text is the chat template's rendering of (user: prompt, assistant: candidate)
when the tokenizer has a template, else prompt + candidate.

Batches are right-padded and the pad id is written into the model config: HF's classifiers pool
the last token that is not the pad id, so a candidate's score does not depend on what it is
batched with (the tests check batched == one by one). A candidate that itself ends in the pad
token would pool one token early; tokenizers without a pad token get eos (or unk) as pad, as
HF's own pipelines do. Candidates are batched in order of length to waste less on padding.
Process reward models live in verifiers/process_reward_model.py. Nothing here trains a model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ponder.verifiers.base import check_batch


def single_token_id(tokenizer, text: str, role: str) -> int:
    """The id of `text` when it is exactly one known token, else a ValueError naming `role`."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise ValueError(
            f"the {role} {text!r} is not a single token of this tokenizer (got ids {ids}); "
            f"pass the model's own {role} string"
        )
    return ids[0]


def load_checkpoint(path, auto_class, device):
    """(tokenizer, model in eval mode) from a local folder; the tokenizer always has a pad id."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model = auto_class.from_pretrained(path, dtype=torch.float32).to(device).eval()
    return tokenizer, model


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def length_sorted_chunks(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length; callers put results back by index."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_right(sequences: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, ...]:
    """(input ids, attention mask), both (B, T), right-padded to the longest sequence."""
    longest = max(len(s) for s in sequences)
    ids = torch.tensor([s + [pad_id] * (longest - len(s)) for s in sequences], device=device)
    mask = torch.tensor(
        [[1] * len(s) + [0] * (longest - len(s)) for s in sequences], device=device
    )  # (B, T)
    return ids, mask


class OutcomeRewardModel:
    process = False

    def __init__(self, path: str, device: str = "cpu", batch_size: int = 16, name: str = "orm"):
        from transformers import AutoModelForSequenceClassification

        check_batch_size(batch_size)
        self.name, self.device, self.batch_size = name, device, batch_size
        self.tokenizer, self.model = load_checkpoint(
            path, AutoModelForSequenceClassification, device
        )
        self.num_labels = self.model.config.num_labels
        if self.num_labels not in (1, 2):
            raise ValueError(f"an ORM needs 1 or 2 labels, {path} has {self.num_labels}")
        # One label: the raw logit, unbounded; two: P(label 1), a probability.
        inf = float("inf")
        self.score_range = (-inf, inf) if self.num_labels == 1 else (0.0, 1.0)
        # HF pools the last non-pad token: it must know which id the batches are padded with.
        self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def render(self, prompt: str, candidate: str) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": candidate}],
                tokenize=False,
            )
            return self.tokenizer.encode(text, add_special_tokens=False)
        return self.tokenizer.encode(prompt + candidate)

    @torch.inference_mode()
    def score(self, prompts, candidates, references=None) -> list[list[float]]:
        check_batch(prompts, candidates, references)
        sequences = [self.render(p, c) for p, c in zip(prompts, candidates, strict=True)]
        out: list[list[float]] = [[] for _ in sequences]
        for chunk in length_sorted_chunks([len(s) for s in sequences], self.batch_size):
            ids, mask = pad_right(
                [sequences[i] for i in chunk], self.tokenizer.pad_token_id, self.device
            )
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()  # (B, L)
            values = logits[:, 0] if self.num_labels == 1 else logits.softmax(-1)[:, 1]  # (B,)
            for i, v in zip(chunk, values.tolist(), strict=True):
                out[i] = [v]
        return out


def scores_of(verifier, prompts: Sequence[str], candidates: Sequence[str]) -> list[list[float]]:
    """Score one by one (the unbatched baseline the tests and benchmarks compare against)."""
    return [verifier.score([p], [c])[0] for p, c in zip(prompts, candidates, strict=True)]
