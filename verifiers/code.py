"""Code verifier: run each candidate program against its tests in the sandbox.

    CodeTestsVerifier(workers=2).score(prompts, candidates, references) -> [[1.0 | 0.0], ...]

references[i] is a JSON object with the tests, in the HumanEval convention:

    {"test": "<code defining check(candidate)>", "entry_point": "<function name>",
     "prefix": true}

The program run is (prompt if "prefix" else "") + candidate + test + `check(<entry_point>)`:
HumanEval completions continue the prompt (the function signature and docstring), while a
chat-style candidate that writes the whole function sets "prefix": false. Score 1.0 only when
the program exits 0; `run()` returns the sandbox's RunResult per candidate so timeouts, memory
and output-limit kills and crashes stay distinct from plain test failures. Candidates run in
parallel on a bounded worker pool (verifiers/sandbox.py has the limits and the isolation).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ponder.verifiers.base import check_batch
from ponder.verifiers.sandbox import Limits, RunResult, Sandbox


def code_reference(test: str, entry_point: str, prefix: bool = True) -> str:
    return json.dumps({"test": test, "entry_point": entry_point, "prefix": prefix})


def build_program(prompt: str, candidate: str, reference: str) -> str:
    try:
        ref = json.loads(reference)
        test, entry = ref["test"], ref["entry_point"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(
            "a code_tests reference is JSON with 'test' and 'entry_point' (see verifiers/code.py)"
        ) from None
    if not entry.isidentifier():
        raise ValueError(f"entry_point {entry!r} is not a Python identifier")
    head = prompt if ref.get("prefix", True) else ""
    return f"{head}{candidate}\n\n{test}\n\ncheck({entry})\n"


class CodeTestsVerifier:
    name = "code_tests"
    process = False

    def __init__(self, workers: int = 2, wall_seconds: float = 10.0, memory_mb: int = 1024):
        self.sandbox = Sandbox(
            Limits(
                wall_seconds=wall_seconds,
                cpu_seconds=max(1, int(wall_seconds)),
                memory_bytes=memory_mb << 20,
            ),
            workers=workers,
        )

    def run(
        self, prompts: Sequence[str], candidates: Sequence[str], references: Sequence[str]
    ) -> list[RunResult]:
        check_batch(prompts, candidates, references, need_references=True)
        programs = [
            build_program(p, c, r) for p, c, r in zip(prompts, candidates, references, strict=True)
        ]
        return self.sandbox.run_many(programs)

    def score(self, prompts, candidates, references=None) -> list[list[float]]:
        return [[1.0 if r.passed else 0.0] for r in self.run(prompts, candidates, references)]
