"""What a task is: problems, their answer format, and how to judge an answer.

    task = get_task("arith", level=6)
    items = task.items(limit=200, seed=0)         # deterministic for a seed
    task.extract_answer(completion_text)          # -> normalised answer string or None
    task.is_correct(item, predicted_answer)       # -> bool (the evaluation metric's judge)

An `Item` carries the text the model is prompted with, the reference answer (or, for code
tasks, the reference tests) and free-form metadata. `reference` is what reference-needing
verifiers receive (`Verifier.score(..., references)`); arith verifiers derive the truth from the
prompt. A task names its default outcome and process verifiers so `ponder eval` can pick one.
`chat` says whether the prompt is a user message to wrap in the model's chat template (real chat
models) or raw text to continue (the embedded arith model).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field

from ponder.engine.structured.params import StructuredOutputsParams
from ponder.engine.structured.patterns import answer_span_regex


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    prompt: str  # what the model sees (before any chat template)
    answer: str  # the normalised reference answer ("" when the task judges by tests)
    reference: str | None = None  # what a reference-needing verifier gets (answer or tests)
    meta: Mapping = field(default_factory=dict)


class Task(abc.ABC):
    name: str
    outcome_verifier: str  # registry name of the default outcome verifier
    process_verifier: str | None = None  # default for process strategies; None: none exists
    step_delimiter: str = "\n"
    chat: bool = False
    # Generation bounds: a step ends at the delimiter or after max_step_tokens; a whole
    # solution (sampling strategies) gets max_steps * max_step_tokens tokens at most.
    max_steps: int = 40
    max_step_tokens: int = 256
    # The final-answer line, for constrained decoding: a line starting `answer_prefix` must be
    # followed by text matching `answer_pattern`, and then the completion ends. None: no format.
    answer_prefix: str | None = None
    answer_pattern: str | None = None

    def answer_constraint(self) -> StructuredOutputsParams | None:
        """A constraint over the whole completion that leaves the reasoning lines free and pins
        the answer line (`SamplingParams(structured_outputs=task.answer_constraint())`): every
        finished sample then has an answer `extract_answer` can read. Step-level searches carry
        the grammar state from step to step, so it constrains their steps consistently."""
        if self.answer_prefix is None or self.answer_pattern is None:
            return None
        regex = answer_span_regex(self.answer_prefix, self.answer_pattern, self.step_delimiter)
        return StructuredOutputsParams(regex=regex)

    @abc.abstractmethod
    def items(self, limit: int, seed: int) -> list[Item]:
        """The first `limit` problems for `seed` (deterministic)."""

    @abc.abstractmethod
    def extract_answer(self, text: str) -> str | None:
        """The normalised final answer in a completion, or None when it states none."""

    def is_correct(self, item: Item, predicted: str | None) -> bool:
        return predicted is not None and predicted == item.answer

    def default_verifier(self, process: bool) -> str:
        if process:
            if self.process_verifier is None:
                raise ValueError(
                    f"task {self.name!r} has no process verifier; pick one with --verifier"
                )
            return self.process_verifier
        return self.outcome_verifier
