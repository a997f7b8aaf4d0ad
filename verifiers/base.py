"""The verifier contract: batched, typed, text in and floats out.

    score(prompts, candidates, references=None) -> one list of floats per candidate

prompts[i] pairs with candidates[i] and, when given, references[i]: the problem's reference
answer (or, for code, its tests). Verifiers that derive the truth from the prompt (arith) or need
none (reward models) ignore references; verifiers that need them raise ValueError when missing.

An outcome verifier (`process = False`) returns a single
score per candidate; a process verifier (`process = True`) returns one score per reasoning step
present in the candidate. Candidates may be partial solutions (a search scores prefixes): steps
are split on the task's delimiter, and an empty trailing segment (the candidate ends with the
delimiter) is not a step. Aggregating step scores into one number is verifiers/aggregate.py's
job, not the verifier's. Verifiers never see model internals. `score_range` declares the lowest
and highest score a verifier gives ((0, 1) for rule checkers and probabilities; an ORM emitting
raw logits is unbounded), so strategies that need probabilities can refuse the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Verifier(Protocol):
    name: str
    process: bool
    score_range: tuple[float, float]  # (lowest, highest) score it can give

    def score(
        self,
        prompts: Sequence[str],
        candidates: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[list[float]]: ...


def score_range(verifier) -> tuple[float, float]:
    """The verifier's declared (lowest, highest) score; (0, 1) when it declares none (rule
    checkers and probabilities, the common case)."""
    lo, hi = getattr(verifier, "score_range", (0.0, 1.0))
    return float(lo), float(hi)


def split_steps(text: str, delimiter: str) -> list[str]:
    """Steps of a (possibly partial) solution; a trailing empty segment is dropped."""
    if not delimiter:
        raise ValueError("the step delimiter must be a non-empty string")
    steps = text.split(delimiter)
    if steps and steps[-1] == "":
        steps.pop()
    return steps


def check_batch(
    prompts: Sequence[str],
    candidates: Sequence[str],
    references: Sequence[str] | None = None,
    *,
    need_references: bool = False,
) -> None:
    if len(prompts) != len(candidates):
        raise ValueError(
            f"score() needs one prompt per candidate: got {len(prompts)} prompts and "
            f"{len(candidates)} candidates"
        )
    if references is None:
        if need_references:
            raise ValueError("this verifier needs references (reference answers or tests)")
    elif len(references) != len(candidates):
        raise ValueError(
            f"score() needs one reference per candidate: got {len(references)} references and "
            f"{len(candidates)} candidates"
        )
