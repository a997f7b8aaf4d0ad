"""Code verifier: judge each candidate program against its tests in the sandbox.

    CodeTestsVerifier(workers=2).score(prompts, candidates, references) -> [[1.0 | 0.0], ...]
    CodeTestsVerifier().run(prompts, candidates, references) -> [RunResult, ...]

references[i] is a JSON object (make one with `code_reference`), in the HumanEval convention:

    {"test": "<code defining check(candidate)>", "entry_point": "<function name>",
     "prefix": "<code before the candidate>" (optional), "stop": ["\\ndef", ...] (optional),
     "harness": "remote" (default) | "in_process" (optional)}

The candidate program is prefix + candidate (cut at its first stop sequence). Without "prefix"
the prompt passed to `score` is the prefix; HumanEval items carry their prompt as the prefix, so
the program does not depend on how the engine decodes the prompt or wraps it in a chat template.
A chat-style candidate that writes the whole function uses "prefix": "".

Harnesses (RunResult.harness says which one judged):
- "remote" (verifiers/code_harness.py): the tests run in a trusted harness process and call the
  candidate, sandboxed in another process, through a pipe with plain values; the verdict is
  "check() returned there". A pass cannot be forged from the candidate's side (exit tricks,
  custom __eq__, reading the tests or the caller's frame). Tests that must hand the candidate
  something that is not plain data end as outcome "error" naming the reason.
- "in_process", only when the reference asks for it: prefix + candidate + test + check(entry)
  run as one sandboxed program, and the pass is exit 0 plus a per-run random marker printed
  after check() returns. That stops exit-code tricks (sys.exit, atexit, excepthook) but not a
  candidate that inspects its own interpreter (frames, gc, __eq__): use it only for tests that
  cannot run remotely.
Score 1.0 only for outcome "passed"; `run()` returns a RunResult per candidate, so timeouts,
memory and output-limit kills, crashes and harness errors stay distinct from test failures.
The verifier refuses (RuntimeError, at the first run) to judge untrusted code below the
isolation level it was configured for ("namespaces+cgroup" by default; see
verifiers/sandbox.py); a weaker level is an explicit `isolation=` argument. Partial credit is
deliberately not given: `check` stops at the first failing assert.
"""

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from ponder.verifiers.base import check_batch
from ponder.verifiers.code_harness import RemoteJob, harness_pool, run_remote
from ponder.verifiers.sandbox import Limits, RunResult, Sandbox

HARNESSES = ("remote", "in_process")


def code_reference(
    test: str,
    entry_point: str,
    prefix: str | None = None,
    stop: Sequence[str] = (),
    harness: str = "remote",
) -> str:
    ref: dict = {"test": test, "entry_point": entry_point}
    if prefix is not None:
        ref["prefix"] = prefix
    if stop:
        ref["stop"] = list(stop)
    if harness != "remote":
        ref["harness"] = harness
    return json.dumps(ref)


def truncate(text: str, stop: Sequence[str]) -> str:
    """`text` up to its first occurrence of any stop sequence."""
    return text[: min((i for s in stop if (i := text.find(s)) != -1), default=len(text))]


@dataclass(frozen=True, slots=True)
class CodeTask:
    prefix: str
    candidate: str  # already cut at the first stop sequence
    test: str
    entry: str
    harness: str


def parse_task(prompt: str, candidate: str, reference: str) -> CodeTask:
    try:
        ref = json.loads(reference)
        test, entry = ref["test"], ref["entry_point"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(
            "a code_tests reference is JSON with 'test' and 'entry_point' (see verifiers/code.py)"
        ) from None
    prefix, stop, harness = ref.get("prefix", prompt), ref.get("stop", []), ref.get("harness")
    if not isinstance(entry, str) or not entry.isidentifier():
        raise ValueError(f"entry_point {entry!r} is not a Python identifier")
    if not isinstance(prefix, str) or not all(isinstance(s, str) and s for s in stop):
        raise ValueError("a code_tests reference's 'prefix' is a string, 'stop' non-empty strings")
    if (harness := harness or "remote") not in HARNESSES:
        raise ValueError(
            f"a code_tests reference's 'harness' is one of {HARNESSES}, got {harness!r}"
        )
    return CodeTask(prefix, truncate(candidate, stop), test, entry, harness)


def build_program(prompt: str, candidate: str, reference: str) -> str:
    """The in-process program: prefix + candidate + test + check(entry)."""
    t = parse_task(prompt, candidate, reference)
    return f"{t.prefix}{t.candidate}\n\n{t.test}\n\ncheck({t.entry})\n"


def run_in_process(sandbox: Sandbox, task: CodeTask) -> RunResult:
    marker = secrets.token_hex(16)
    program = (
        f"{task.prefix}{task.candidate}\n\n{task.test}\n\ncheck({task.entry})\n"
        f"__import__('sys').stdout.write('\\n{marker}\\n')\n"
    )
    result = sandbox.run(program)
    marked = result.stdout.endswith(f"\n{marker}\n")
    outcome = "failed" if result.passed and not marked else result.outcome
    stdout = result.stdout.removesuffix(f"\n{marker}\n")
    return replace(result, outcome=outcome, stdout=stdout, harness="in_process")


class CodeTestsVerifier:
    name = "code_tests"
    process = False

    def __init__(
        self,
        workers: int = 2,
        wall_seconds: float = 10.0,
        memory_mb: int = 1024,
        isolation: str = "namespaces+cgroup",
    ):
        if memory_mb < 64:
            raise ValueError(f"memory_mb must be >= 64 (the interpreter needs it), got {memory_mb}")
        self.limits = Limits(
            wall_seconds=wall_seconds,
            cpu_seconds=max(1, int(wall_seconds)),
            memory_bytes=memory_mb << 20,
        )
        self.workers, self.isolation = workers, isolation

    @functools.cached_property
    def sandbox(self) -> Sandbox:
        """Built at first use: a machine without the configured isolation refuses then, not
        when a task merely constructs its verifier."""
        return Sandbox(self.limits, workers=self.workers, isolation=self.isolation)

    @functools.cached_property
    def harnesses(self):
        """Harness servers (verifiers/code_harness_pool.py), started as worker threads need
        them and reused across calls; they exit with this verifier or its process."""
        return harness_pool(self.sandbox.python)

    def close(self) -> None:
        """Stop the idle harness servers now rather than at garbage collection."""
        if "harnesses" in self.__dict__:
            self.harnesses.close()

    def judge(self, task: CodeTask) -> RunResult:
        if task.harness == "in_process":
            return run_in_process(self.sandbox, task)
        program = task.prefix + task.candidate
        job = RemoteJob(task.prefix, program, task.test, task.entry)
        return run_remote(self.sandbox, self.harnesses, job)

    def run(
        self,
        prompts: Sequence[str],
        candidates: Sequence[str],
        references: Sequence[str] | None,
    ) -> list[RunResult]:
        check_batch(prompts, candidates, references, need_references=True)
        tasks = [
            parse_task(p, c, r) for p, c, r in zip(prompts, candidates, references, strict=True)
        ]
        sandbox = self.sandbox
        with ThreadPoolExecutor(max_workers=sandbox.workers) as pool:
            return list(pool.map(self.judge, tasks))

    def score(
        self,
        prompts: Sequence[str],
        candidates: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[list[float]]:
        return [[1.0 if r.passed else 0.0] for r in self.run(prompts, candidates, references)]
