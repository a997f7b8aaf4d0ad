"""Quality of the embedded arith model: pass@1 and unbiased pass@16 per difficulty level.

    python bench/arith_quality.py                  # 500 held-out problems at the default level,
                                                   # 200 at the others, 16 samples each, T=1.0
    python bench/arith_quality.py --problems 100 --levels 3

Samples with the reference decoder (Hugging Face generate), grades with the exact outcome
verifier, prints a table and a final JSON line, and writes bench/results/arith_quality.json
(one row per level; `default: true` on the default level). Seeded: the problems come from the
held-out split with --seed, and sampling is seeded per batch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from ponder.align.metrics import pass_at_k
from ponder.engine.torch_backend.reference import ReferenceDecoder
from ponder.tasks.arith import DEFAULT_LEVEL, LEVELS, embedded_model_path, generate
from ponder.tasks.registry import make_verifier

RESULTS = Path(__file__).resolve().parent / "results"


def measure_level(decoder, level: int, problems: int, n: int, temperature: float, seed: int):
    items = generate(problems, split="heldout", seed=seed, difficulty=level)
    verifier = make_verifier("arith_outcome")
    start = time.perf_counter()
    samples = decoder.sample(
        [p.prompt for p in items], n=n, temperature=temperature, seed=seed, batch_size=8
    )
    seconds = time.perf_counter() - start
    correct = np.zeros((len(items), n))  # (P, n) 0/1 outcome per sample
    tokens = 0
    for i, (problem, group) in enumerate(zip(items, samples, strict=True)):
        texts = [s.text for s in group]
        scores = verifier.score([problem.prompt] * n, texts)
        correct[i] = [s[0] for s in scores]
        tokens += sum(len(s.token_ids) + 1 for s in group)
    counts = correct.sum(axis=1)
    return {
        "difficulty": level,
        "num_ops": LEVELS[level].num_ops,
        "max_operand": LEVELS[level].max_operand,
        "problems": len(items),
        "samples": n,
        "pass@1": round(float(np.mean([pass_at_k(n, c, 1) for c in counts])), 4),
        "pass@4": round(float(np.mean([pass_at_k(n, c, 4) for c in counts])), 4),
        f"pass@{n}": round(float(np.mean([pass_at_k(n, c, n) for c in counts])), 4),
        "solved_none": int((counts == 0).sum()),
        "generated_tokens": tokens,
        "seconds": round(seconds, 1),
        "default": level == DEFAULT_LEVEL,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="pass@1 / pass@16 of the embedded arith model")
    parser.add_argument("--levels", type=int, nargs="*", default=sorted(LEVELS))
    parser.add_argument(
        "--problems",
        type=int,
        default=None,
        help="problems per level (default: 500 at the default level, 200 else)",
    )
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="model folder (default: embedded)")
    parser.add_argument("--out", default=str(RESULTS / "arith_quality.json"))
    args = parser.parse_args()

    decoder = ReferenceDecoder(args.model or embedded_model_path())
    rows = []
    for level in args.levels:
        count = args.problems or (500 if level == DEFAULT_LEVEL else 200)
        rows.append(measure_level(decoder, level, count, args.n, args.temperature, args.seed))
        print(f"level {level} done in {rows[-1]['seconds']}s", flush=True)

    k = f"pass@{args.n}"
    print(
        f"\n{'level':>5} {'ops':>3} {'max':>4} {'probs':>5} {'pass@1':>7} {'pass@4':>7} "
        f"{k:>8} {'none':>5} {'tok/s':>7}"
    )
    for r in rows:
        star = " *" if r["default"] else ""
        print(
            f"{r['difficulty']:>5} {r['num_ops']:>3} {r['max_operand']:>4} {r['problems']:>5} "
            f"{r['pass@1']:>7.3f} {r['pass@4']:>7.3f} {r[k]:>8.3f} {r['solved_none']:>5} "
            f"{r['generated_tokens'] / r['seconds']:>7.0f}{star}"
        )
    result = {
        "bench": "arith_quality",
        "model": str(args.model or "embedded"),
        "temperature": args.temperature,
        "seed": args.seed,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
