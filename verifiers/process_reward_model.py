"""Process reward models (PRMs) from Hugging Face checkpoints: one score per step.

    ProcessRewardModel(path, convention="step_token").score(...) -> [[s_1, ..., s_k], ...]

Two conventions:
- "step_token" (Qwen2.5-Math-PRM style): a token-classification head with two classes; a
  separator token is put after every step and the step's score is P(class 1) at that position.
  Checkpoints with an `AutoModelForTokenClassification` head load directly. (Qwen2.5-Math-PRM
  itself ships a custom reward head behind trust_remote_code; loading that is not done here.)
- "tag_token" (Math-Shepherd style): a causal LM; a tag token is put after every step and the
  score is P(good) / (P(good) + P(bad)) of the next-token distribution at the tag.

The input is the prompt's tokens, then each step's tokens followed by the separator (no chat
template: PRMs are trained on their own raw layout, which `step_layout` builds and
tasks/arith/train_rm.py reuses). Steps are split on `step_delimiter` like every verifier
(verifiers/base.split_steps), so a trailing delimiter is not a step and an empty candidate gets
no scores. Special tokens are looked up in the tokenizer by their text; one that is unknown or
not a single token is a ValueError naming it. Batches are right-padded and the model is causal,
so a candidate's scores do not depend on its batch, and a step's score depends only on the
steps before it. `LastStepOutcome` turns a PRM into an outcome verifier.
"""

from __future__ import annotations

import torch
from ponder.verifiers.base import check_batch, split_steps
from ponder.verifiers.reward_model import (
    check_batch_size,
    length_sorted_chunks,
    load_checkpoint,
    pad_right,
    single_token_id,
)

CONVENTIONS = ("step_token", "tag_token")


def step_layout(
    tokenizer, separator_id: int, delimiter: str, prompt: str, candidate: str
) -> tuple[list[int], list[int]]:
    """Token ids (prompt, then each step followed by the separator) and separator positions."""
    ids = tokenizer.encode(prompt)
    positions = []
    for step in split_steps(candidate, delimiter):
        ids += tokenizer.encode(step, add_special_tokens=False) + [separator_id]
        positions.append(len(ids) - 1)
    return ids, positions


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

        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        check_batch_size(batch_size)
        self.name, self.convention, self.device = name, convention, device
        self.step_delimiter, self.batch_size = step_delimiter, batch_size
        auto = (
            AutoModelForTokenClassification if convention == "step_token" else AutoModelForCausalLM
        )
        self.tokenizer, self.model = load_checkpoint(path, auto, device)
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

    def step_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """(steps, C|V) logits at the separators -> (steps,) probabilities the step is good."""
        if self.convention == "step_token":
            return logits.softmax(-1)[:, 1]
        return logits[:, [self.good_id, self.bad_id]].softmax(-1)[:, 0]  # (steps, 2) -> (steps,)

    @torch.inference_mode()
    def score(self, prompts, candidates, references=None) -> list[list[float]]:
        check_batch(prompts, candidates, references)
        laid = [self.layout(p, c) for p, c in zip(prompts, candidates, strict=True)]
        out: list[list[float]] = [[] for _ in laid]
        for chunk in length_sorted_chunks([len(ids) for ids, _ in laid], self.batch_size):
            ids, mask = pad_right(
                [laid[i][0] for i in chunk], self.tokenizer.pad_token_id, self.device
            )
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()  # (B, T, C|V)
            for row, i in enumerate(chunk):
                out[i] = self.step_scores(logits[row, laid[i][1]]).tolist()
        return out


class LastStepOutcome:
    """A PRM used as an outcome verifier: the last step's score (0.0 for an empty candidate)."""

    process = False

    def __init__(self, prm: ProcessRewardModel, name: str):
        self.prm, self.name = prm, name

    def score(self, prompts, candidates, references=None) -> list[list[float]]:
        return [[s[-1] if s else 0.0] for s in self.prm.score(prompts, candidates, references)]
