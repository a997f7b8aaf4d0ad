"""Code verifier: run each candidate program against its tests in the sandbox.

    CodeTestsVerifier(workers=2).score(prompts, candidates, references) -> [[1.0 | 0.0], ...]
    CodeTestsVerifier().run(prompts, candidates, references) -> [RunResult, ...]

references[i] is a JSON object (make one with `code_reference`), in the HumanEval convention:

    {"test": "<code defining check(candidate)>", "entry_point": "<function name>",
     "prefix": "<code before the candidate>" (optional), "stop": ["\\ndef", ...] (optional)}

The program run is prefix + candidate (cut at its first stop sequence) + test +
`check(<entry_point>)`. Without "prefix" the prompt passed to `score` is the prefix; HumanEval
items carry their prompt as the prefix, so the program does not depend on how the engine
decodes the prompt tokens or wraps them in a chat template. A chat-style candidate that writes
the whole function uses "prefix": "". Score 1.0 only when the program exits 0; `run()` returns
the sandbox's RunResult per candidate, so timeouts, memory and output-limit kills and crashes
stay distinct from plain test failures. Candidates run in parallel on a bounded worker pool
(verifiers/sandbox.py has the limits and the isolation). Partial credit (the fraction of asserts
passed) is deliberately not given: `check` stops at the first failing assert.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ponder.verifiers.base import check_batch
from ponder.verifiers.sandbox import Limits, RunResult, Sandbox


def code_reference(
    test: str, entry_point: str, prefix: str | None = None, stop: Sequence[str] = ()
) -> str:
    ref: dict = {"test": test, "entry_point": entry_point}
    if prefix is not None:
        ref["prefix"] = prefix
    if stop:
        ref["stop"] = list(stop)
    return json.dumps(ref)


def truncate(text: str, stop: Sequence[str]) -> str:
    """`text` up to its first occurrence of any stop sequence."""
    return text[: min((i for s in stop if (i := text.find(s)) != -1), default=len(text))]


def build_program(prompt: str, candidate: str, reference: str) -> str:
    try:
        ref = json.loads(reference)
        test, entry = ref["test"], ref["entry_point"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(
            "a code_tests reference is JSON with 'test' and 'entry_point' (see verifiers/code.py)"
        ) from None
    prefix, stop = ref.get("prefix", prompt), ref.get("stop", [])
    if not isinstance(entry, str) or not entry.isidentifier():
        raise ValueError(f"entry_point {entry!r} is not a Python identifier")
    if not isinstance(prefix, str) or not all(isinstance(s, str) and s for s in stop):
        raise ValueError("a code_tests reference's 'prefix' is a string, 'stop' non-empty strings")
    return f"{prefix}{truncate(candidate, stop)}\n\n{test}\n\ncheck({entry})\n"


class CodeTestsVerifier:
    name = "code_tests"
    process = False

    def __init__(self, workers: int = 2, wall_seconds: float = 10.0, memory_mb: int = 1024):
        if memory_mb < 64:
            raise ValueError(f"memory_mb must be >= 64 (the interpreter needs it), got {memory_mb}")
        self.sandbox = Sandbox(
            Limits(
                wall_seconds=wall_seconds,
                cpu_seconds=max(1, int(wall_seconds)),
                memory_bytes=memory_mb << 20,
            ),
            workers=workers,
        )

    def run(
        self,
        prompts: Sequence[str],
        candidates: Sequence[str],
        references: Sequence[str] | None,
    ) -> list[RunResult]:
        check_batch(prompts, candidates, references, need_references=True)
        programs = [
            build_program(p, c, r) for p, c, r in zip(prompts, candidates, references, strict=True)
        ]
        return self.sandbox.run_many(programs)

    def score(
        self,
        prompts: Sequence[str],
        candidates: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[list[float]]:
        return [[1.0 if r.passed else 0.0] for r in self.run(prompts, candidates, references)]
