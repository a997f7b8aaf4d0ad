"""Hostile candidates through the old and the new verifier: the failing-before evidence of #16.

    python bench/sandbox_hostile_before_after.py [--baseline 3b89c93]

Every reward hack of tests/test_sandbox_hostile.py (HACKS) is scored by the code_tests
verifier of the baseline revision (its verifiers/code.py and sandbox.py, loaded apart as
bench/sandbox_throughput.py does) and by the current one: a fixed hack is old 1.0, new 0.0.
Every isolation attack (HOSTILE) runs as a plain program through both sandboxes: "contained"
means the outcome is one the hostile test accepts. A few leaks are measured directly, outside
the outcome: a SysV shared-memory segment left behind, a user namespace created, five 300 MiB
children in one run, the CPU time of a run killed at the wall limit. Hacks that attack the
new harness's own channels (its pipes, fds, server loop) have no counterpart in the old design,
which ran the tests in the candidate's process: they show old 0.0 as well. Prints a table and
a final JSON line; writes bench/results/sandbox_hostile.json. Needs root (the new level).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from ponder.verifiers.code import CodeTestsVerifier  # noqa: E402
from ponder.verifiers.sandbox import Sandbox  # noqa: E402
from sandbox_throughput import baseline_verifier_class  # noqa: E402
from test_sandbox_hostile import HACKS, HOSTILE, LIMITS, REF, shm_keys  # noqa: E402

SPIN = "end = time.process_time() + 0.5\nwhile time.process_time() < end:\n    pass\n"


def leak_programs(key: int) -> dict[str, tuple[str, str]]:
    """name -> (program, what a leak looks like); each prints one line that says."""
    child = textwrap.indent(SPIN, "    ")
    return {
        "SysV shm segment outlives the run": (
            f"import ctypes\nprint(ctypes.CDLL(None).shmget({key}, 1 << 20, 0o1666) >= 0)",
            "the segment exists after the run",
        ),
        "user namespace (root of its own)": (
            "import ctypes\nprint(ctypes.CDLL(None).unshare(0x10000000) == 0)",
            "unshare(CLONE_NEWUSER) succeeded",
        ),
        "5 x 300 MiB children in one run": (
            textwrap.dedent("""
                import os
                pids = []
                for _ in range(5):
                    pid = os.fork()
                    if pid == 0:
                        block = bytearray(300 << 20)
                        block[::4096] = b"x" * len(block[::4096])
                        os._exit(0)
                    pids.append(pid)
                print(all(os.waitpid(p, 0)[1] == 0 for p in pids))
            """),
            "1.5 GiB used under a 512 MiB limit",
        ),
        "CPU before a wall-limit kill (cpu_seconds)": (
            f"import os, time\nif os.fork() == 0:\n{child}    os._exit(0)\nos.wait()\n{SPIN}"
            "time.sleep(3600)\n",
            "cpu_seconds under 0.9 for 1 s of CPU",
        ),
    }


def leaked(name: str, result, key: int) -> bool:
    if name.startswith("SysV"):
        found = str(key) in shm_keys()
        subprocess.run(["ipcrm", "-M", str(key)], capture_output=True)
        return found
    if name.startswith("CPU"):
        return result.cpu_seconds < 0.9
    return result.stdout.strip() == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="3b89c93")
    parser.add_argument("--out", default=str(HERE / "results" / "sandbox_hostile.json"))
    args = parser.parse_args()
    old_class = baseline_verifier_class(args.baseline)
    old_sandbox = importlib.import_module("baseline_sandbox").Sandbox
    kw = {"workers": 4, "wall_seconds": LIMITS.wall_seconds, "memory_mb": 512}
    verifiers = {"old": old_class(**kw), "new": CodeTestsVerifier(**kw)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the old sandbox warns about nothing; be safe
        sandboxes = {"old": old_sandbox(LIMITS, workers=4), "new": Sandbox(LIMITS, workers=4)}
    rows = []
    # 1. Reward hacks: the score of each verifier.
    names = list(HACKS)
    for impl, verifier in verifiers.items():
        results = verifier.run([""] * len(names), [HACKS[n] for n in names], [REF] * len(names))
        for n, r in zip(names, results, strict=True):
            rows.append({"kind": "reward hack", "case": n, "impl": impl,
                         "score": 1.0 if r.passed else 0.0, "outcome": r.outcome})  # fmt: skip
    # 2. Isolation attacks: contained means an outcome the hostile test accepts.
    for name, (source, accepted) in HOSTILE.items():
        for impl, sandbox in sandboxes.items():
            r = sandbox.run(source)
            rows.append({"kind": "isolation", "case": name, "impl": impl,
                         "outcome": r.outcome, "contained": r.outcome in accepted})  # fmt: skip
    # 3. Leaks measured outside the outcome.
    for impl, sandbox in sandboxes.items():
        key = int(uuid.uuid4().int % (1 << 30)) + 1
        for name, (source, leak) in leak_programs(key).items():
            r = sandbox.run(source)
            rows.append({"kind": "leak", "case": name, "impl": impl, "outcome": r.outcome,
                         "contained": not leaked(name, r, key), "leak_means": leak})  # fmt: skip
    verifiers["new"].close()
    print_table(rows)
    hacks = [r for r in rows if r["kind"] == "reward hack"]
    summary = {
        "hacks_old_pass": sum(r["score"] for r in hacks if r["impl"] == "old"),
        "hacks_new_pass": sum(r["score"] for r in hacks if r["impl"] == "new"),
        "hacks": len(HACKS),
        "contained_old": sum(r.get("contained", 0) for r in rows if r["impl"] == "old"),
        "contained_new": sum(r.get("contained", 0) for r in rows if r["impl"] == "new"),
        "isolation_cases": sum(1 for r in rows if r["kind"] != "reward hack") // 2,
    }
    result = {"bench": "sandbox_hostile", "baseline": args.baseline,
              "isolation_new": sandboxes["new"].isolation, "load_average": os.getloadavg()[0],
              "summary": summary, "rows": rows}  # fmt: skip
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"bench": "sandbox_hostile", "baseline": args.baseline, **summary}))


def print_table(rows: list[dict]) -> None:
    by_case: dict[tuple[str, str], dict] = {}
    for r in rows:
        by_case.setdefault((r["kind"], r["case"]), {})[r["impl"]] = r

    def cell(r: dict) -> str:
        if "score" in r:
            return f"{r['score']:.1f} {r['outcome']}"
        return f"{'contained' if r['contained'] else 'LEAKED'} ({r['outcome']})"

    print(f"{'kind':<12} {'case':<44} {'old (' + 'baseline)':<28} new")
    for (kind, case), impls in by_case.items():
        print(f"{kind:<12} {case:<44} {cell(impls['old']):<28} {cell(impls['new'])}")


if __name__ == "__main__":
    main()
