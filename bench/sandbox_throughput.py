"""Sandbox throughput: HumanEval canonical solutions checked per second, by worker-pool size.

    python bench/sandbox_throughput.py [--workers 1 2 4] [--repeats 1]

Runs all 164 HumanEval canonical solutions against their tests through the code_tests verifier
(one sandboxed process each: namespaces, uid switch and rlimits where available) with pools of
1, 2 and 4 workers in the same run; the ratio to the 1-worker pool is the pool's speedup. All
must pass. Prints a table and a final JSON line; writes bench/results/sandbox_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from ponder.tasks.registry import get_task
from ponder.verifiers.code import CodeTestsVerifier

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--out", default=str(RESULTS / "sandbox_throughput.json"))
    args = parser.parse_args()
    task = get_task("humaneval")
    items = task.items(164, seed=0)
    prompts = [i.prompt for i in items]
    programs = [i.meta["canonical_solution"] for i in items]
    references = [i.reference for i in items]
    rows = []
    for workers in args.workers:
        verifier = CodeTestsVerifier(workers=workers)
        start = time.perf_counter()
        results = verifier.run(prompts, programs, references)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "workers": workers,
                "programs": len(results),
                "passed": sum(r.passed for r in results),
                "seconds": round(seconds, 2),
                "programs_per_s": round(len(results) / seconds, 1),
                "isolation": verifier.sandbox.isolation,
            }
        )
    base = rows[0]["programs_per_s"]
    print(f"{'workers':>7} {'passed':>7} {'seconds':>8} {'prog/s':>7} {'vs 1':>6}  isolation")
    for r in rows:
        r["speedup"] = round(r["programs_per_s"] / base, 2)
        print(
            f"{r['workers']:>7} {r['passed']:>4}/{r['programs']:<3} {r['seconds']:>7} "
            f"{r['programs_per_s']:>7} {r['speedup']:>6}  {r['isolation']}"
        )
    result = {"bench": "sandbox_throughput", "cpus": os.cpu_count(), "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
