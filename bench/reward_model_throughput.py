"""Scoring throughput of the learned arith PRM: batched vs one by one, same run, same candidates.

    python bench/reward_model_throughput.py [--problems 48 --samples 4 --rounds 3 --threads 2]

Samples solutions to held-out problems from the embedded model (seeded), then scores all of them
with `arith_prm` at batch size 1 (one `score` call per candidate, the unbatched baseline) and at
each of `--batch-sizes`, in `--rounds` interleaved rounds so that load from other processes hits
every mode alike; each mode's time is its best round (the median is reported too). It checks that
every batch size gives the one-by-one scores (max abs difference) and reports candidates/s,
steps/s and tokens/s. Prints a table and a final JSON line; writes
bench/results/reward_model_throughput.json. Measures scoring only: not sampling, not loading.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from ponder.engine import Engine, SamplingParams
from ponder.tasks.arith import DEFAULT_LEVEL, generate
from ponder.tasks.registry import make_verifier
from ponder.verifiers.reward_model import scores_of

RESULTS = Path(__file__).resolve().parent / "results"


def sample(problems: int, samples: int, seed: int) -> tuple[list[str], list[str]]:
    tasks = generate(problems, split="heldout", seed=seed, difficulty=DEFAULT_LEVEL)
    with Engine.from_pretrained(None) as engine:
        outputs = engine.generate(
            [t.prompt for t in tasks],
            SamplingParams(n=samples, temperature=1.0, seed=seed, max_tokens=320),
        )
    prompts = [t.prompt for t, o in zip(tasks, outputs, strict=True) for _ in o.outputs]
    return prompts, [c.text for o in outputs for c in o.outputs]


def timed(fn) -> tuple[float, list[list[float]]]:
    start = time.perf_counter()
    scores = fn()
    return time.perf_counter() - start, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=48)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "reward_model_throughput.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prompts, texts = sample(args.problems, args.samples, args.seed)
    prm = make_verifier("arith_prm", device=args.device)
    tokens = sum(len(prm.layout(p, t)[0]) for p, t in zip(prompts, texts, strict=True))
    prm.score(prompts[:4], texts[:4])  # warm-up: first-call allocations are not throughput

    # 1. Interleaved rounds: batch size 1 (a score() call per candidate), then each batch size.
    modes = [1, *args.batch_sizes]
    seconds: dict[int, list[float]] = {b: [] for b in modes}
    scores: dict[int, list[list[float]]] = {}
    for _ in range(args.rounds):
        for b in modes:
            prm.batch_size = b
            call = (
                (lambda: scores_of(prm, prompts, texts))
                if b == 1
                else (lambda: prm.score(prompts, texts))
            )
            elapsed, scores[b] = timed(call)
            seconds[b].append(elapsed)

    # 2. Per-mode rates from the best round; agreement with the one-by-one scores.
    steps = sum(len(s) for s in scores[1])
    flat_single = torch.tensor([x for s in scores[1] for x in s])
    rows = []
    for b in modes:
        best, median = min(seconds[b]), statistics.median(seconds[b])
        diff = (torch.tensor([x for s in scores[b] for x in s]) - flat_single).abs().max()
        rows.append(
            {
                "batch_size": b,
                "cands_per_s": round(len(texts) / best, 1),
                "cands_per_s_median": round(len(texts) / median, 1),
                "steps_per_s": round(steps / best, 1),
                "tokens_per_s": round(tokens / best),
                "max_abs_diff_vs_single": float(diff),
            }
        )
    for row in rows:
        row["speedup_vs_single"] = round(row["cands_per_s"] / rows[0]["cands_per_s"], 2)
    print(f"{'batch':>5} {'cands/s':>8} {'median':>8} {'steps/s':>8} {'tok/s':>8} {'speedup':>7}")
    for r in rows:
        print(
            f"{r['batch_size']:>5} {r['cands_per_s']:>8} {r['cands_per_s_median']:>8} "
            f"{r['steps_per_s']:>8} {r['tokens_per_s']:>8} {r['speedup_vs_single']:>7}"
        )
    result = {
        "bench": "reward_model_throughput",
        "verifier": "arith_prm",
        "parameters": prm.model.num_parameters(),
        "device": args.device,
        "threads": args.threads,
        "machine": platform.machine(),
        "seed": args.seed,
        "candidates": len(texts),
        "steps": steps,
        "tokens": tokens,
        "rounds": args.rounds,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
