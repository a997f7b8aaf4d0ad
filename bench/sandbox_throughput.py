"""Sandbox throughput: HumanEval canonical solutions checked per second, by worker-pool size.

    python bench/sandbox_throughput.py [--workers 1 2 32] [--repeats 3] [--seed 0]
        [--baseline REV]  # also time the code_tests verifier as of git revision REV

Runs all 164 HumanEval canonical solutions against their tests through the code_tests verifier
(at its default isolation: a fresh sandboxed candidate process each, judged in a fork of one of
the verifier's long-lived harness servers, verifiers/code_harness_pool.py) with pools
of 1, 2 and 32 workers (32 = 32 candidates in flight at once), in an order shuffled by the seed.
With --baseline, the verifier and sandbox of that revision (verifiers/code.py and sandbox.py
from `git show`) run too, as "baseline" rows. Each configuration runs `repeats` times,
interleaved (1, 2, 32, 1, 2, 32, ...) so that load from other processes hits every one alike;
the median time counts. The ratio to the 1-worker pool is the pool's speedup; it cannot
exceed the number of idle cores, so the load average at the start and end is recorded too. All
programs must pass. Prints a table and a final JSON line; writes
bench/results/sandbox_throughput.json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ponder.tasks.registry import get_task
from ponder.verifiers.code import CodeTestsVerifier

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parent.parent


def baseline_verifier_class(rev: str):
    """CodeTestsVerifier as of git revision `rev` (its code.py and sandbox.py, loaded apart)."""
    folder = Path(tempfile.mkdtemp(prefix="ponder-baseline-"))
    for name in ("sandbox", "code"):
        text = subprocess.run(
            ["git", "show", f"{rev}:verifiers/{name}.py"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        text = text.replace("from ponder.verifiers.sandbox import", "from baseline_sandbox import")
        (folder / f"baseline_{name}.py").write_text(text)
    sys.path.insert(0, str(folder))
    return importlib.import_module("baseline_code").CodeTestsVerifier


def timed_run(verifier: CodeTestsVerifier, items) -> float:
    start = time.perf_counter()
    results = verifier.run(
        [i.prompt for i in items],
        [i.meta["canonical_solution"] for i in items],
        [i.reference for i in items],
    )
    seconds = time.perf_counter() - start
    failed = [i.id for i, r in zip(items, results, strict=True) if not r.passed]
    if failed:
        raise RuntimeError(f"canonical solutions failed in the sandbox: {failed}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 32])
    parser.add_argument("--baseline", default=None, help="a git revision to time as well")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "sandbox_throughput.json"))
    args = parser.parse_args()
    if args.repeats < 1 or min(args.workers) < 1:
        raise ValueError("--repeats and every --workers value must be >= 1")
    items = get_task("humaneval").items(164, seed=0)
    random.Random(args.seed).shuffle(items)
    configs = [("current", w) for w in args.workers]
    classes = {"current": CodeTestsVerifier}
    if args.baseline:
        classes["baseline"] = baseline_verifier_class(args.baseline)
        configs += [("baseline", w) for w in args.workers]
    verifiers = {(impl, w): classes[impl](workers=w) for impl, w in configs}
    load_start = os.getloadavg()[0]
    times: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
    for _ in range(args.repeats):
        for c in configs:
            times[c].append(timed_run(verifiers[c], items))
    rows = []
    for impl, w in configs:
        seconds = statistics.median(times[impl, w])
        rows.append(
            {
                "impl": impl,
                "workers": w,
                "programs": len(items),
                "seconds_median": round(seconds, 2),
                "seconds_all": [round(t, 2) for t in times[impl, w]],
                "programs_per_s": round(len(items) / seconds, 1),
            }
        )
    base = rows[0]["programs_per_s"]
    print(
        f"{'impl':>8} {'workers':>7} {'programs':>8} {'median s':>9} {'prog/s':>7} {'vs first':>8}"
    )
    for r in rows:
        r["speedup"] = round(r["programs_per_s"] / base, 2)
        print(
            f"{r['impl']:>8} {r['workers']:>7} {r['programs']:>8} {r['seconds_median']:>9} "
            f"{r['programs_per_s']:>7} {r['speedup']:>8}"
        )
    result = {
        "bench": "sandbox_throughput",
        "seed": args.seed,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "isolation": verifiers[configs[0]].sandbox.isolation,
        "baseline": args.baseline,
        "load_average_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "all_passed": True,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
