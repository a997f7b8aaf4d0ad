"""Held-out quality of the learned arith reward model against the exact checkers.

    python bench/arith_reward_model.py [--problems 80 --samples 8 --seed 1]

Samples solutions to HELD-OUT problems from the embedded model (seeded), scores them with the
learned PRM (`arith_prm`, tasks/arith/reward_model) and with the exact step checker, and reports
step-level and outcome-level (last step vs the exact outcome) AUROC, accuracy at threshold 0.5,
and a 10-bin reliability table (mean predicted vs empirical rate). Prints tables and a final
JSON line; writes bench/results/arith_reward_model.json. Scoring speed is
bench/reward_model_throughput.py's job, not this script's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ponder.engine import Engine, SamplingParams
from ponder.tasks.arith import DEFAULT_LEVEL, generate
from ponder.tasks.registry import make_verifier

RESULTS = Path(__file__).resolve().parent / "results"


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties count half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def reliability(scores: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict]:
    edges = np.linspace(0, 1, bins + 1)
    table = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (scores >= lo) & ((scores < hi) if hi < 1 else (scores <= hi))
        if inside.any():
            table.append(
                {
                    "bin": f"{lo:.1f}-{hi:.1f}",
                    "count": int(inside.sum()),
                    "mean_predicted": round(float(scores[inside].mean()), 3),
                    "empirical": round(float(labels[inside].mean()), 3),
                }
            )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=80)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "arith_reward_model.json"))
    args = parser.parse_args()
    problems = generate(args.problems, split="heldout", seed=args.seed, difficulty=DEFAULT_LEVEL)
    with Engine.from_pretrained(None) as engine:
        outputs = engine.generate(
            [p.prompt for p in problems],
            SamplingParams(n=args.samples, temperature=1.0, seed=args.seed, max_tokens=320),
        )
    prompts = [p.prompt for p, o in zip(problems, outputs, strict=True) for _ in o.outputs]
    texts = [c.text for o in outputs for c in o.outputs]
    exact = make_verifier("arith_step").score(prompts, texts)
    learned = make_verifier("arith_prm").score(prompts, texts)
    step_pred = np.array([x for s in learned for x in s])
    step_true = np.array([x for s in exact for x in s])
    out_pred = np.array([s[-1] if s else 0.0 for s in learned])
    out_true = np.array([s[-1] if s else 0.0 for s in exact])
    result = {
        "bench": "arith_reward_model",
        "problems": args.problems,
        "samples": args.samples,
        "seed": args.seed,
        "solutions": len(texts),
        "steps": int(len(step_true)),
        "step_auroc": round(auroc(step_pred, step_true), 4),
        "step_accuracy@0.5": round(float(((step_pred >= 0.5) == step_true).mean()), 4),
        "outcome_auroc": round(auroc(out_pred, out_true), 4),
        "outcome_accuracy@0.5": round(float(((out_pred >= 0.5) == out_true).mean()), 4),
        "outcome_positive_rate": round(float(out_true.mean()), 4),
        "step_reliability": reliability(step_pred, step_true),
        "outcome_reliability": reliability(out_pred, out_true),
    }
    print(f"{'level':<8} {'AUROC':>6} {'acc@0.5':>8}")
    print(f"{'step':<8} {result['step_auroc']:>6} {result['step_accuracy@0.5']:>8}")
    print(f"{'outcome':<8} {result['outcome_auroc']:>6} {result['outcome_accuracy@0.5']:>8}")
    print(f"\n{'outcome bin':<10} {'count':>6} {'predicted':>9} {'empirical':>9}")
    for row in result["outcome_reliability"]:
        print(
            f"{row['bin']:<10} {row['count']:>6} {row['mean_predicted']:>9} {row['empirical']:>9}"
        )
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
