"""Engine threads: decode throughput by loop-thread count, with and without another OpenMP pool.

    python bench/engine_threads.py                 # embedded model
    python bench/engine_threads.py --model models/smollm2 --max-tokens 32

Each configuration runs in its own process: best-of-n (n = 16 and 64, temperature 1, EOS
ignored) on a short arith question, medians of --repeats runs. Configurations: the engine loop
with 1 thread, with every core, and with the automatic choice (threads.pick_threads); each also
in a process whose main thread ran a parallel torch op with every core before building the
engine ("pool": libgomp then throttles the loop thread's regions). Prints a table and a final
JSON line; writes bench/results/engine_threads.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = [  # (name, loop threads (None: automatic), main thread ran a parallel op first)
    ("1 thread", 1, False),
    ("all cores", 0, False),
    ("auto", None, False),
    ("1 thread, pool", 1, True),
    ("all cores, pool", 0, True),
    ("auto, pool", None, True),
]


def worker(args) -> None:
    import torch

    if args.pool:  # a parallel region on the main thread: its OpenMP pool lives on
        torch.exp(torch.randn(1 << 20))
    from ponder.engine import Engine, SamplingParams
    from ponder.tasks.arith import generate

    threads = None if args.threads < 0 else (args.threads or torch.get_num_threads())
    engine = Engine.from_pretrained(args.model, threads=threads)
    prompt = generate(1, split="heldout", seed=args.seed, difficulty=4)[0].prompt
    out = {}
    for n in (16, 64):
        params = SamplingParams(
            n=n, temperature=1.0, max_tokens=args.max_tokens, seed=args.seed, ignore_eos=True
        )
        engine.generate(prompt, SamplingParams(n=2, max_tokens=4, seed=0))  # warm-up
        rates = []
        for _ in range(args.repeats):
            engine.reset_prefix_cache()
            start = time.perf_counter()
            engine.generate(prompt, params)
            rates.append(n * args.max_tokens / (time.perf_counter() - start))
        out[f"n={n}"] = round(statistics.median(rates))
    out["loop_threads"] = engine.loop.threads
    engine.close()
    print("RESULT " + json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "engine_threads.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--pool", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    rows = []
    for name, threads, pool in CONFIGS:
        cmd = [sys.executable, __file__, "--worker", "--seed", str(args.seed)]
        cmd += ["--max-tokens", str(args.max_tokens), "--repeats", str(args.repeats)]
        cmd += ["--threads", str(-1 if threads is None else threads)]
        cmd += ["--pool"] * pool + (["--model", args.model] if args.model else [])
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
        rows.append({"config": name, **json.loads(line[len("RESULT ") :])})
        print(f"{name:18s} " + "  ".join(f"{k} {v}" for k, v in rows[-1].items() if k != "config"))
    result = {
        "bench": "engine_threads",
        "model": args.model or "embedded",
        "seed": args.seed,
        "max_tokens": args.max_tokens,
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
