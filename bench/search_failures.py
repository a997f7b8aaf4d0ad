"""Why searches fail: each wrong answer classified by whether the search ever held a right one.

    python bench/search_failures.py --strategies particle astar bon --n 16 --problems 100

Runs each strategy on the first held-out arith problems with the same per-problem seeds as
bench/strategies.py and sorts every wrong answer into
- `selection`: some returned candidate had the right answer, the final pick missed it;
- `lost`: no candidate had the right answer. For the step-level strategies the row also gives
  the median step at which every live branch first scored below 0.5 (`lost_at_step`, from the
  trace's per-step scores; with the exact process verifier that is the step all of them went
  wrong at once, which particle filtering, unlike A*'s revisits, cannot undo).
Prints a table and a final JSON line; writes bench/results/search_failures.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from pathlib import Path

from ponder.engine import Engine
from ponder.strategies import STRATEGIES, SearchRequest, problem_seed, run
from ponder.tasks.arith import DEFAULT_LEVEL, generate
from ponder.tasks.arith.verifiers import extract_answer
from ponder.tasks.registry import make_verifier

RESULTS = Path(__file__).resolve().parent / "results"
OPTIONS = {"beam": {"beam_width": 4}, "dvts": {"beam_width": 4}}


def lost_step(trace: list[dict]) -> int | None:
    """The first step whose recorded scores are all below 0.5 (None if the trace has none)."""
    for entry in trace:
        scores = entry.get("scores")
        if "step" in entry and scores and max(scores) < 0.5:
            return entry["step"]
    return None


async def classify(engine, problems, strategy: str, n: int, verifier, seed: int) -> dict:
    async def one(i, p):
        req = SearchRequest(
            p.prompt, verifier, n=n, seed=problem_seed(seed, i), extract_answer=extract_answer
        )
        r = await run(engine, strategy, req, **OPTIONS.get(strategy, {}))
        truth = str(p.answer)
        if r.answer == truth:
            return "correct", None
        if any(c.answer == truth for c in r.candidates):
            return "selection", None
        return "lost", lost_step(r.trace)

    results = await asyncio.gather(*(one(i, p) for i, p in enumerate(problems)))
    kinds = [k for k, _ in results]
    steps = [s for k, s in results if k == "lost" and s is not None]
    return {
        "strategy": strategy,
        "n": n,
        "verifier": verifier.name,
        "correct": kinds.count("correct"),
        "selection": kinds.count("selection"),
        "lost": kinds.count("lost"),
        "lost_at_step": statistics.median(steps) if steps else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=["particle", "astar", "bon"])
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--noisy", action="store_true", help="the noisy verifiers (10%% flips)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "search_failures.json")
    args = parser.parse_args()
    for name in args.strategies:
        if name not in STRATEGIES:
            parser.error(f"unknown strategy {name!r}; known: {sorted(STRATEGIES)}")
    problems = generate(args.problems, split="heldout", seed=args.seed, difficulty=DEFAULT_LEVEL)
    engine = Engine.from_pretrained(None, kv_cache_gb=1)
    rows = []
    for name in args.strategies:
        kind = "step" if STRATEGIES[name].process else "outcome"
        verifier = make_verifier(f"arith_noisy_{kind}" if args.noisy else f"arith_{kind}")
        rows.append(asyncio.run(classify(engine, problems, name, args.n, verifier, args.seed)))
    engine.close()
    print(f"{'strategy':>10} {'n':>3} {'verifier':<18} {'correct':>7} {'selection':>9} {'lost':>5}")
    for r in rows:
        print(
            f"{r['strategy']:>10} {r['n']:>3} {r['verifier']:<18} {r['correct']:>7} "
            f"{r['selection']:>9} {r['lost']:>5}  lost at step {r['lost_at_step']}"
        )
    result = {"bench": "search_failures", "problems": args.problems, "seed": args.seed}
    result["rows"] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
