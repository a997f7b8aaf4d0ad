"""Engine throughput: ponder vs vLLM-cpu vs HF generate, each engine in its own clean process.

    python bench/engine_throughput.py                                 # embedded model
    python bench/engine_throughput.py --model models/smollm2 --max-tokens 32
    python bench/engine_throughput.py --vllm-python /work/vllm-venv/bin/python --rounds 3

Workloads (same prompts and seeds for every engine): best-of-n with n = 16 and 64 on a short
question and on a ~330-token few-shot prompt (EOS ignored, so each engine generates exactly
n * max_tokens tokens), and a step-wise search (16 branches x 8 rounds of one line each). Each
round starts one process per engine (bench/engine_worker.py), in turn, so the engines
interleave over the run; each process repeats every workload and the table shows medians over
all runs, with ponder's ratio to each baseline. vLLM runs from its own venv (`--vllm-python`,
or $PONDER_VLLM_PYTHON); without one it is skipped with a note. Nothing here tunes the allocator.
Prints a table and a final JSON line; writes bench/results/engine_throughput.json (or --out).
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
RESULTS = HERE / "results"
TARGETS = {  # issue #18, section 4: ponder / baseline
    ("bon", "few-shot", "vllm"): 1.5,
    ("stepwise", "", "vllm"): 1.5,
    ("bon", "question", "hf"): 2.0,
}


def build_workloads(seed: int, max_tokens: int, quick: bool) -> list[dict]:
    from ponder.tasks.arith import generate  # text only: loads no model

    question = generate(1, split="heldout", seed=seed, difficulty=4)[0].prompt
    shots = generate(3, split="train", seed=seed + 1, difficulty=4)
    few_shot = "".join(p.prompt + p.solution for p in shots) + question
    workloads = []
    for name, prompt in (("question", question), ("few-shot", few_shot)):
        for n in (16,) if quick else (16, 64):
            workloads.append(
                {"kind": "bon", "name": f"bon n={n} {name}", "group": name,
                 "prompt": prompt, "n": n, "max_tokens": max_tokens, "seed": seed}
            )  # fmt: skip
    workloads.append(
        {"kind": "stepwise", "name": "stepwise 16x8", "group": "", "prompt": question,
         "width": 16, "rounds": 8, "max_tokens": 64, "seed": seed}
    )  # fmt: skip
    return workloads


def run_worker(python: str, engine: str, args, path: str, variant: int) -> dict | None:
    """One clean process; `variant` is vLLM's block size or HF's thread count."""
    env = dict(os.environ, VLLM_CACHE_ROOT=args.vllm_cache, PYTHONUNBUFFERED="1")
    env.pop("MALLOC_MMAP_THRESHOLD_", None)  # every engine with glibc's defaults
    block_size = variant if engine == "vllm" else args.block_size
    cmd = [python, str(HERE / "engine_worker.py"), "--engine", engine, "--model", args.model,
           "--workloads", path, "--repeats", str(args.repeats),
           "--block-size", str(block_size)]  # fmt: skip
    if engine == "hf":
        cmd += ["--threads", str(variant)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    print(f"{engine} ({variant}) failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
    return None


def summarise(workloads: list[dict], runs: dict[str, list[dict]]) -> list[dict]:
    """Per workload: median tok/s (and seconds) per engine over every run, and ratios."""
    rows = []
    for w in workloads:
        row = {"name": w["name"], "kind": w["kind"], "group": w["group"]}
        for engine, outs in runs.items():
            samples = [r for out in outs for res in out["results"] if res["name"] == w["name"]
                       for r in res["runs"]]  # fmt: skip
            if samples:
                row[f"{engine}_tok_s"] = round(statistics.median(r["tok_s"] for r in samples))
                row[f"{engine}_s"] = round(statistics.median(r["seconds"] for r in samples), 3)
                row[f"{engine}_runs"] = len(samples)
        for base in ("vllm", "hf"):
            if "ponder_tok_s" in row and f"{base}_tok_s" in row:
                # tok/s for every row: a step-wise search's work (lines, survivors) is random,
                # so its wall time alone compares searches of different sizes
                row[f"vs_{base}"] = round(row["ponder_tok_s"] / row[f"{base}_tok_s"], 2)
                target = TARGETS.get((w["kind"], w["group"], base))
                if target:
                    row[f"target_vs_{base}"] = target
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n{'workload':<22} {'ponder':>9} {'vLLM':>9} {'HF':>9} {'/vLLM':>7} {'/HF':>6}")
    for r in rows:
        cells = [str(r.get(f"{e}_tok_s", "-")) for e in ("ponder", "vllm", "hf")]
        ratios = [str(r.get(f"vs_{b}", "-")) for b in ("vllm", "hf")]
        print(f"{r['name']:<22} {cells[0]:>9} {cells[1]:>9} {cells[2]:>9} "
              f"{ratios[0]:>7} {ratios[1]:>6}")  # fmt: skip
    print("(generated tok/s, medians; ratios: ponder / baseline; step-wise seconds in the JSON)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="HF folder (default: the embedded model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=16, help="ponder's KV block size")
    parser.add_argument("--vllm-block-sizes", default="32,128", help="vLLM's best one is kept")
    parser.add_argument("--rounds", type=int, default=2, help="processes per engine, in turn")
    parser.add_argument("--repeats", type=int, default=3, help="runs per workload per process")
    parser.add_argument("--hf-threads", default="1,2", help="HF's best thread count is kept")
    parser.add_argument("--engines", default="ponder,vllm,hf")
    parser.add_argument("--vllm-python", default=os.environ.get("PONDER_VLLM_PYTHON"))
    parser.add_argument("--vllm-cache", default=str(Path(tempfile.gettempdir()) / "ponder-vllm"))
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "engine_throughput.json"))
    args = parser.parse_args()
    if args.model is None:
        from ponder import embedded

        args.model = str(embedded.model_path())
    workloads = build_workloads(args.seed, args.max_tokens, args.quick)
    engines = args.engines.split(",")
    notes = []
    if "vllm" in engines and not (args.vllm_python and Path(args.vllm_python).is_file()):
        engines.remove("vllm")
        notes.append("vLLM skipped: pass --vllm-python (a venv with vllm-cpu 0.32)")
    variants = {
        "vllm": [int(b) for b in args.vllm_block_sizes.split(",")],
        "hf": [int(t) for t in args.hf_threads.split(",")],
        "ponder": [0],
    }
    runs: dict[str, list[dict]] = {}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(workloads, f)
    for _ in range(args.rounds):
        for engine in engines:
            python = args.vllm_python if engine == "vllm" else sys.executable
            for variant in variants[engine]:
                out = run_worker(python, engine, args, f.name, variant)
                if out is not None:
                    runs.setdefault((engine, variant), []).append(out)
    os.unlink(f.name)
    rows = summarise(workloads, {"ponder": runs.get(("ponder", 0), [])})
    for base in ("vllm", "hf"):
        _merge_best(rows, workloads, runs, base)
    print_table(rows)
    for note in notes:
        print(note)
    result = {
        "bench": "engine_throughput",
        "model": args.model,
        "seed": args.seed,
        "max_tokens": args.max_tokens,
        "block_size": args.block_size,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "device": "cpu",
        "cpu_count": os.cpu_count(),
        "rows": rows,
        "notes": notes,
        "load_s": {f"{e}@{v}": [o["load_s"] for o in outs] for (e, v), outs in runs.items()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


def _merge_best(rows: list[dict], workloads: list[dict], runs: dict, base: str) -> None:
    """Per workload, add `base` at its fastest variant (vLLM block size, HF thread count)."""
    for (engine, variant), outs in runs.items():
        if engine != base:
            continue
        mine = summarise(workloads, {"ponder": runs.get(("ponder", 0), []), base: outs})
        for row, cand in zip(rows, mine, strict=True):
            if f"{base}_tok_s" not in cand:
                continue
            key = f"{base}_tok_s"
            if key not in row or cand[key] > row[key]:
                row.update({k: v for k, v in cand.items() if base in k}, **{f"{base}_at": variant})


if __name__ == "__main__":
    main()
