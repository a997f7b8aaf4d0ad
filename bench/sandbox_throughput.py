"""Sandbox throughput: HumanEval canonical solutions checked per second, by worker-pool size.

    python bench/sandbox_throughput.py [--workers 1 2 4] [--repeats 3] [--seed 0]

Runs all 164 HumanEval canonical solutions against their tests through the code_tests verifier
(one sandboxed process tree each: namespaces, a per-run uid and rlimits where available) with
pools of 1, 2 and 4 workers, in an order shuffled by the seed. Each pool size runs `repeats`
times, interleaved (1, 2, 4, 1, 2, 4, ...) so that load from other processes hits every size
alike; the median time counts. The ratio to the 1-worker pool is the pool's speedup; it cannot
exceed the number of idle cores, so the load average at the start and end is recorded too. All
programs must pass. Prints a table and a final JSON line; writes
bench/results/sandbox_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

from ponder.tasks.registry import get_task
from ponder.verifiers.code import CodeTestsVerifier

RESULTS = Path(__file__).resolve().parent / "results"


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
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "sandbox_throughput.json"))
    args = parser.parse_args()
    if args.repeats < 1 or min(args.workers) < 1:
        raise ValueError("--repeats and every --workers value must be >= 1")
    items = get_task("humaneval").items(164, seed=0)
    random.Random(args.seed).shuffle(items)
    verifiers = {w: CodeTestsVerifier(workers=w) for w in args.workers}
    load_start = os.getloadavg()[0]
    times: dict[int, list[float]] = {w: [] for w in args.workers}
    for _ in range(args.repeats):
        for w in args.workers:
            times[w].append(timed_run(verifiers[w], items))
    rows = []
    for w in args.workers:
        seconds = statistics.median(times[w])
        rows.append(
            {
                "workers": w,
                "programs": len(items),
                "seconds_median": round(seconds, 2),
                "seconds_all": [round(t, 2) for t in times[w]],
                "programs_per_s": round(len(items) / seconds, 1),
            }
        )
    base = rows[0]["programs_per_s"]
    print(f"{'workers':>7} {'programs':>8} {'median s':>9} {'prog/s':>7} {'vs first':>8}")
    for r in rows:
        r["speedup"] = round(r["programs_per_s"] / base, 2)
        print(
            f"{r['workers']:>7} {r['programs']:>8} {r['seconds_median']:>9} "
            f"{r['programs_per_s']:>7} {r['speedup']:>8}"
        )
    result = {
        "bench": "sandbox_throughput",
        "seed": args.seed,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "isolation": verifiers[args.workers[0]].sandbox.isolation,
        "load_average_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "all_passed": True,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
