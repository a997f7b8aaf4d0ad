"""Learned verifiers from Hugging Face checkpoints: outcome (ORM) and process (PRM) reward models.

    OutcomeRewardModel(path).score(prompts, candidates) -> [[score], ...]
    ProcessRewardModel(path, convention="step_token").score(...) -> [[s_1, ..., s_k], ...]

ORM: a sequence-classification checkpoint (`AutoModelForSequenceClassification`). One label: the
score is the raw logit (an unbounded reward; rank-only uses such as BoN are unaffected); two
labels: P(label 1). The text is the chat template's rendering of (user: prompt, assistant:
candidate) when the tokenizer has a template, else prompt + candidate.

PRM, two conventions:
- "step_token" (Qwen2.5-Math-PRM style): a token-classification head with two classes; a
  separator token is put after every step and the step's score is P(class 1) at that position.
  Checkpoints with an `AutoModelForTokenClassification` head load directly.
- "tag_token" (Math-Shepherd style): a causal LM; a tag token is put after every step and the
  score is P(good) / (P(good) + P(bad)) of the next-token distribution at the tag.
Steps are split on `step_delimiter` like every verifier (verifiers/base.py). Special tokens are
looked up in the tokenizer by their text; one that is unknown or not a single token is a
ValueError naming it. Batches are right-padded; positions come from the attention mask, so a
candidate's scores do not depend on what it is batched with.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ponder.verifiers.base import check_batch, split_steps


def single_token_id(tokenizer, text: str, role: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise ValueError(
            f"the {role} {text!r} is not a single token of this tokenizer (got ids {ids}); "
            f"pass the model's own {role} string"
        )
    return ids[0]


def _load(path, auto_class, device):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model = auto_class.from_pretrained(path, dtype=torch.float32).to(device).eval()
    return tokenizer, model


def _batched_ids(tokenizer, sequences: list[list[int]], device) -> tuple[torch.Tensor, ...]:
    longest = max(len(s) for s in sequences)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([s + [pad] * (longest - len(s)) for s in sequences], device=device)
    mask = torch.tensor(
        [[1] * len(s) + [0] * (longest - len(s)) for s in sequences], device=device
    )  # (B, T)
    return ids, mask


def step_layout(
    tokenizer, separator_id: int, delimiter: str, prompt: str, candidate: str
) -> tuple[list[int], list[int]]:
    """Token ids (prompt, then each step followed by the separator) and separator positions.
    PRM training (tasks/arith/train_rm.py) builds its inputs with this same function."""
    ids = tokenizer.encode(prompt)
    positions = []
    for step in split_steps(candidate, delimiter):
        ids += tokenizer.encode(step, add_special_tokens=False) + [separator_id]
        positions.append(len(ids) - 1)
    return ids, positions


class OutcomeRewardModel:
    process = False

    def __init__(self, path: str, device: str = "cpu", batch_size: int = 16, name: str = "orm"):
        from transformers import AutoModelForSequenceClassification

        self.name, self.device, self.batch_size = name, device, batch_size
        self.tokenizer, self.model = _load(path, AutoModelForSequenceClassification, device)
        self.num_labels = self.model.config.num_labels
        if self.num_labels not in (1, 2):
            raise ValueError(f"an ORM needs 1 or 2 labels, {path} has {self.num_labels}")
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
        out: list[list[float]] = []
        for start in range(0, len(sequences), self.batch_size):
            ids, mask = _batched_ids(
                self.tokenizer, sequences[start : start + self.batch_size], self.device
            )
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()  # (B, L)
            values = logits[:, 0] if self.num_labels == 1 else logits.softmax(-1)[:, 1]
            out += [[float(v)] for v in values]
        return out


class ProcessRewardModel:
    process = True

    def __init__(
        self,
        path: str,
        convention: str = "step_token",
        step_delimiter: str = "\n",
        separator: str = "\n",
        good: str = "+",
        bad: str = "-",
        device: str = "cpu",
        batch_size: int = 16,
        name: str = "prm",
    ):
        from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

        if convention not in ("step_token", "tag_token"):
            raise ValueError(f"convention must be 'step_token' or 'tag_token', got {convention!r}")
        self.name, self.convention, self.device = name, convention, device
        self.step_delimiter, self.batch_size = step_delimiter, batch_size
        auto = (
            AutoModelForTokenClassification if convention == "step_token" else AutoModelForCausalLM
        )
        self.tokenizer, self.model = _load(path, auto, device)
        self.separator_id = single_token_id(self.tokenizer, separator, "step separator")
        if convention == "tag_token":
            self.good_id = single_token_id(self.tokenizer, good, "good token")
            self.bad_id = single_token_id(self.tokenizer, bad, "bad token")
        elif self.model.config.num_labels != 2:
            raise ValueError(
                f"a step_token PRM needs 2 labels, {path} has {self.model.config.num_labels}"
            )

    def layout(self, prompt: str, candidate: str) -> tuple[list[int], list[int]]:
        return step_layout(
            self.tokenizer, self.separator_id, self.step_delimiter, prompt, candidate
        )

    @torch.inference_mode()
    def score(self, prompts, candidates, references=None) -> list[list[float]]:
        check_batch(prompts, candidates, references)
        laid = [self.layout(p, c) for p, c in zip(prompts, candidates, strict=True)]
        out: list[list[float]] = []
        for start in range(0, len(laid), self.batch_size):
            chunk = laid[start : start + self.batch_size]
            ids, mask = _batched_ids(self.tokenizer, [ids for ids, _ in chunk], self.device)
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()  # (B, T, C|V)
            for row, (_, positions) in enumerate(chunk):
                at = logits[row, positions]  # (steps, C|V)
                if self.convention == "step_token":
                    scores = at.softmax(-1)[:, 1]
                else:
                    pair = at[:, [self.good_id, self.bad_id]].softmax(-1)  # (steps, 2)
                    scores = pair[:, 0]
                out.append([float(s) for s in scores])
        return out


class LastStepOutcome:
    """A PRM used as an outcome verifier: the last step's score (0.0 for an empty candidate)."""

    process = False

    def __init__(self, prm: ProcessRewardModel, name: str):
        self.prm, self.name = prm, name

    def score(self, prompts, candidates, references=None) -> list[list[float]]:
        return [[s[-1] if s else 0.0] for s in self.prm.score(prompts, candidates, references)]


def scores_of(verifier, prompts: Sequence[str], candidates: Sequence[str]) -> list[list[float]]:
    """Score one by one (the unbatched baseline the throughput benchmark compares against)."""
    return [verifier.score([p], [c])[0] for p, c in zip(prompts, candidates, strict=True)]
