"""Accuracy against compute: every strategy at several widths, exact and noisy process verifier.

    python bench/strategies.py                                     # the full grid (hours on CPU)
    python bench/strategies.py --problems 100 --budgets 4 8 16     # a reduced grid
    python bench/strategies.py --strategies bon bom --verifiers noisy --out F.json  # a slice

On held-out arith problems of the default level (fixed seed), runs each strategy at each width
n (samples, particles or beams: roughly n samples' worth of tokens) with the exact verifiers
and with the noisy ones (each step or outcome score flipped with probability --flip-rate), and
on request (`--verifiers learned`) with the shipped learned arith reward model. All
problems of one cell run concurrently on one engine.

BoN, majority, weighted majority and Best-of-Majority differ only in how they pick from the same
n samples (same per-problem seed, one wave: identical draws), so by default they share one draw
per width: `bon` runs as a strategy, each sample is scored by every requested verifier (the
calls the strategies make: the exact checkers are deterministic, the noisy one hashes
(question, text)), and the other rules are applied to the recorded scores with the strategies'
own selection functions (voting.py, bom.py). Rows from a shared draw say "shared_draw": true;
`--separate` runs each strategy on its own (same numbers, 4x the sampling time). Prints a table
and a final JSON line,
writes bench/results/strategies.json and a plot (accuracy vs mean generated tokens, one line per
strategy and verifier) as bench/results/strategies.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from ponder.engine import Engine
from ponder.strategies import STRATEGIES, SearchRequest, problem_seed, run
from ponder.strategies.bom import best_of_majority
from ponder.strategies.voting import majority_vote, weighted_majority_vote
from ponder.tasks.arith import DEFAULT_LEVEL, generate
from ponder.tasks.arith.verifiers import extract_answer
from ponder.tasks.registry import make_verifier
from ponder.verifiers.aggregate import aggregate

RESULTS = Path(__file__).resolve().parent / "results"
OPTIONS = {"beam": {"beam_width": 4}, "dvts": {"beam_width": 4}, "bom": {"alpha": 0.1}}
UNSCORED = {name for name, s in STRATEGIES.items() if not s.needs_verifier}
# Labels that run a registered strategy with extra options (adaptive budgets, item 8).
VARIANTS = {
    "majority_adaptive": ("majority", {"adaptive": True, "wave": 4}),
    "majority_conf95": ("majority", {"confidence": 0.95, "wave": 4}),
    "bon_adaptive": ("bon", {"stop_score": 1.0, "wave": 4}),
    "bom_adaptive": ("bom", {"alpha": 0.1, "stop_score": 1.0, "wave": 4}),
}


MODES = ("exact", "noisy", "learned")
SHARED = ("bon", "majority", "weighted_majority", "bom")  # selection rules over one draw


def verifier_for(label: str, mode: str, flip_rate: float, seed: int):
    """exact: the arith checkers; noisy: each score flipped with probability `flip_rate`
    (independent noise); learned: the shipped arith reward model (arith_prm / arith_orm), whose
    errors are systematic, as a real reward model's are."""
    strategy = VARIANTS.get(label, (label,))[0]
    step = STRATEGIES[strategy].process
    if mode == "noisy":
        kind = "step" if step else "outcome"
        return make_verifier(f"arith_noisy_{kind}", flip_rate=flip_rate, seed=seed)
    if mode == "learned":
        return make_verifier("arith_prm" if step else "arith_orm")
    return make_verifier("arith_step" if step else "arith_outcome")


def mode_of(verifier_name: str) -> str:
    if verifier_name.startswith("noisy"):
        return "noisy"
    return "learned" if verifier_name in ("arith_prm", "arith_orm") else "exact"


async def cell(
    engine, problems, label: str, n: int, verifier, seed: int, max_sequences: int = 4096
) -> dict:
    """One strategy at one width over all problems. At most max_sequences // n problems are in
    flight at once: a search pins its branches' KV blocks, so 500 problems x 64 particles at
    once overflow the pool (they did, at 4 GB). Results do not depend on this (per-problem
    seeds); only the wall time does."""
    strategy, options = VARIANTS.get(label, (label, OPTIONS.get(label, {})))
    if strategy in ("beam", "dvts") and n % options["beam_width"]:
        return {}
    gate = asyncio.Semaphore(max(1, max_sequences // n))

    async def one(i, p):
        req = SearchRequest(
            p.prompt, verifier, n=n, seed=problem_seed(seed, i), extract_answer=extract_answer
        )
        async with gate:
            r = await run(engine, strategy, req, **options)
        return r.answer == str(p.answer), r.stats["generated_tokens"], r.stats["verifier_calls"]

    start = time.perf_counter()
    results = await asyncio.gather(*(one(i, p) for i, p in enumerate(problems)))
    count = len(results)
    return {
        "strategy": label,
        "n": n,
        "verifier": verifier.name,
        "accuracy": round(sum(r[0] for r in results) / count, 4),
        "mean_tokens": round(sum(r[1] for r in results) / count, 1),
        "mean_verifier_calls": round(sum(r[2] for r in results) / count, 1),
        "seconds": round(time.perf_counter() - start, 1),
    }


class Recorder:
    """The outcome verifier of one problem's shared draw: scores each sample with every mode's
    verifier, remembers the scores by sample text, and gives BoN the first mode's."""

    process = False

    def __init__(self, verifiers: dict[str, object]):
        self.verifiers = verifiers
        self.name = "+".join(v.name for v in verifiers.values())
        self.scores: dict[str, dict[str, list[float]]] = {}

    def score(self, prompts, candidates, references=None):
        args = (prompts, candidates) if references is None else (prompts, candidates, references)
        per_mode = {mode: v.score(*args) for mode, v in self.verifiers.items()}
        for i, text in enumerate(candidates):
            self.scores[text] = {mode: per_mode[mode][i] for mode in self.verifiers}
        return per_mode[next(iter(self.verifiers))]


def select(rule: str, answers: list, scores: list[float]) -> str | None:
    """What each shared-draw strategy returns for these samples (its own selection code)."""
    if rule == "bon":
        best = max(range(len(scores)), key=scores.__getitem__, default=None)  # first of ties
        return None if best is None else answers[best]
    if rule == "majority":
        return majority_vote(answers)
    if rule == "weighted_majority":
        return weighted_majority_vote(answers, scores)
    picked = best_of_majority(answers, scores, OPTIONS["bom"]["alpha"], 1)
    return picked[0] if picked else None


async def shared_cell(
    engine,
    problems,
    rules: list[str],
    n: int,
    modes: list[str],
    flip_rate: float,
    seed: int,
    max_sequences: int = 4096,
) -> list[dict]:
    """One draw of n samples per problem; a row per (rule, mode), `majority` once (unscored)."""
    gate = asyncio.Semaphore(max(1, max_sequences // n))
    verifiers = {m: verifier_for("bon", m, flip_rate, seed) for m in modes}

    async def one(i, p):
        recorder = Recorder(verifiers)
        req = SearchRequest(
            p.prompt, recorder, n=n, seed=problem_seed(seed, i), extract_answer=extract_answer
        )
        async with gate:
            r = await run(engine, "bon", req)
        answers = [c.answer for c in r.candidates]
        out = {}
        for m in modes:
            steps = [recorder.scores[c.text][m] for c in r.candidates]
            scores = [aggregate(s, req.aggregation) if s else 0.0 for s in steps]  # as BoN does
            if m == modes[0] and r.answer != select("bon", answers, scores):
                raise AssertionError(f"problem {i}: BoN's pick differs from the recorded scores'")
            for rule in rules:
                out[rule, m] = select(rule, answers, scores) == str(p.answer)
        return out, r.stats["generated_tokens"], r.stats["verifier_calls"]

    start = time.perf_counter()
    results = await asyncio.gather(*(one(i, p) for i, p in enumerate(problems)))
    seconds = round(time.perf_counter() - start, 1)
    count = len(results)
    tokens = round(sum(r[1] for r in results) / count, 1)
    calls = round(sum(r[2] for r in results) / count, 1)
    rows = []
    for m in modes:
        for rule in rules:
            if rule in UNSCORED and m != "exact":
                continue  # never calls its verifier: listed once, with the exact runs
            rows.append(
                {
                    "strategy": rule,
                    "n": n,
                    "verifier": verifiers[m].name,
                    "accuracy": round(sum(r[0][rule, m] for r in results) / count, 4),
                    "mean_tokens": tokens,
                    "mean_verifier_calls": 0.0 if rule in UNSCORED else calls,
                    "seconds": seconds,  # of the whole shared draw
                    "shared_draw": True,
                }
            )
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in MODES if any(mode_of(r["verifier"]) == m for r in rows)] or ["exact"]
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.5), sharey=True)
    axes = [axes] if len(modes) == 1 else list(axes)
    names = list(dict.fromkeys(r["strategy"] for r in rows))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    colors = {name: cmap(i % cmap.N) for i, name in enumerate(names)}
    for ax, mode in zip(axes, modes, strict=True):
        for strategy in names:
            pts = sorted(
                (r["mean_tokens"], r["accuracy"])
                for r in rows
                if r["strategy"] == strategy
                and (
                    mode_of(r["verifier"]) == mode
                    or VARIANTS.get(strategy, (strategy,))[0] in UNSCORED
                )
            )
            if pts:
                style = "--" if strategy in VARIANTS else "-"  # adaptive budgets dashed
                ax.plot(
                    *zip(*pts, strict=True),
                    style,
                    marker="o",
                    label=strategy,
                    color=colors[strategy],
                )
        ax.set_xscale("log")
        ax.set_xlabel("mean generated tokens per problem")
        ax.set_title(f"{mode} verifier")
        ax.grid(alpha=0.3)
    legend = {}  # one legend for all panels, outside them: inside, it hid the baseline point
    for ax in axes:
        legend.update({label: h for h, label in zip(*ax.get_legend_handles_labels(), strict=True)})
    axes[-1].legend(
        legend.values(), legend.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1)
    )
    axes[0].set_ylabel("accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")


def adaptive_savings(rows: list[dict]) -> list[dict]:
    """Each adaptive-budget row against its strategy's full-budget row (same n and verifier):
    the accuracy of both and the share of generated tokens the early stop saved."""
    full = {(r["strategy"], r["n"], r["verifier"]): r for r in rows}
    out = []
    for r in rows:
        if r["strategy"] not in VARIANTS:
            continue
        base = full.get((VARIANTS[r["strategy"]][0], r["n"], r["verifier"]))
        if base is None:
            continue
        out.append(
            {
                "variant": r["strategy"],
                "n": r["n"],
                "verifier": r["verifier"],
                "accuracy": r["accuracy"],
                "full_accuracy": base["accuracy"],
                "tokens": r["mean_tokens"],
                "full_tokens": base["mean_tokens"],
                "tokens_saved": round(1 - r["mean_tokens"] / base["mean_tokens"], 4),
            }
        )
    return out


def print_tables(rows: list[dict]) -> None:
    print(
        f"\n{'strategy':>18} {'n':>3} {'verifier':<20} {'accuracy':>8} {'tokens':>8} {'calls':>6}"
    )
    for r in rows:
        print(
            f"{r['strategy']:>18} {r['n']:>3} {r['verifier']:<20} {r['accuracy']:>8.3f} "
            f"{r['mean_tokens']:>8.0f} {r['mean_verifier_calls']:>6.0f}"
        )
    savings = adaptive_savings(rows)
    if savings:
        print(f"\n{'adaptive':>18} {'n':>3} {'accuracy (full)':>16} {'tokens (full)':>18} saved")
        for a in savings:
            print(
                f"{a['variant']:>18} {a['n']:>3} {a['accuracy']:>7.3f} ({a['full_accuracy']:.3f})"
                f" {a['tokens']:>8.0f} ({a['full_tokens']:>7.0f}) {a['tokens_saved']:>6.1%}"
            )


def merge(paths: list[Path], out: Path) -> None:
    """One results file from slices run in separate processes; refuses mismatched settings."""
    parts = [json.loads(p.read_text()) for p in paths]
    keys = ("problems", "level", "seed", "flip_rate")
    for p, part in zip(paths, parts, strict=True):
        if any(part[k] != parts[0][k] for k in keys):
            raise SystemExit(f"{p}: {[part[k] for k in keys]} differs from {paths[0]}")
    rows, seen = [], set()
    for part in parts:
        for r in part["rows"]:
            key = (r["strategy"], r["n"], r["verifier"])
            if key not in seen:  # every slice starts with the same one-sample baseline
                seen.add(key)
                rows.append(r)
    labels = [*STRATEGIES, *VARIANTS]  # registry order, then the adaptive variants
    rows.sort(
        key=lambda r: (
            labels.index(r["strategy"]) if r["strategy"] in labels else len(labels),
            MODES.index(mode_of(r["verifier"])),
            r["n"],
        )
    )
    result = {
        **{k: parts[0][k] for k in ("bench", *keys)},
        "budgets": sorted({n for part in parts for n in part["budgets"]}),
        "merged_from": [p.name for p in paths],
        "complete": all(part.get("complete", False) for part in parts),
        "rows": rows,
        "adaptive_savings": adaptive_savings(rows),
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    plot(rows, out.with_suffix(".png"))
    print_tables(rows)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replot", metavar="JSON", help="only redraw the plot of a results file")
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="only merge results files of slices run apart (same problems, seed, flip rate) into "
        "--out and plot it",
    )
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--budgets", type=int, nargs="*", default=[4, 8, 16, 32, 64])
    parser.add_argument(
        "--strategies", nargs="*", default=[s for s in STRATEGIES if s != "sample"] + list(VARIANTS)
    )
    parser.add_argument("--verifiers", nargs="*", choices=MODES, default=["exact", "noisy"])
    parser.add_argument("--flip-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--kv-gb", type=float, default=4.0, help="KV pool size (each process allocates it)"
    )
    parser.add_argument(
        "--separate",
        action="store_true",
        help="run bon, majority, weighted_majority and bom each on its own draw (same numbers)",
    )
    parser.add_argument("--out", default=str(RESULTS / "strategies.json"))
    args = parser.parse_args()
    if args.replot:
        plot(
            json.loads(Path(args.replot).read_text())["rows"], Path(args.replot).with_suffix(".png")
        )
        return
    if args.merge:
        merge([Path(p) for p in args.merge], Path(args.out))
        return
    problems = generate(args.problems, split="heldout", seed=args.seed, difficulty=DEFAULT_LEVEL)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(rows: list[dict], complete: bool) -> dict:
        """Written after every cell, so a run stopped early keeps what it measured."""
        result = {
            "bench": "strategies",
            "problems": args.problems,
            "level": DEFAULT_LEVEL,
            "seed": args.seed,
            "flip_rate": args.flip_rate,
            "budgets": args.budgets,
            "strategies": args.strategies,
            "verifiers": args.verifiers,
            "complete": complete,
            "rows": rows,
            "adaptive_savings": adaptive_savings(rows),
        }
        out.write_text(json.dumps(result, indent=1) + "\n")
        return result

    engine = Engine.from_pretrained(None, kv_cache_gb=args.kv_gb)
    rows = [
        asyncio.run(cell(engine, problems, "sample", 1, make_verifier("arith_outcome"), args.seed))
    ]

    def report(row: dict) -> None:
        rows.append(row)
        save(rows, complete=False)
        print(
            f"{row['strategy']:>18} n={row['n']:<3} {row['verifier']:<20} "
            f"acc {row['accuracy']:.3f} tokens {row['mean_tokens']:>8.0f}  "
            f"{row['seconds']:>6.1f}s",
            flush=True,
        )

    shared = [] if args.separate else [s for s in args.strategies if s in SHARED]
    if shared:
        modes = ["exact"] + [m for m in args.verifiers if m != "exact"]
        for n in args.budgets:
            draw = shared_cell(engine, problems, shared, n, modes, args.flip_rate, args.seed)
            for row in asyncio.run(draw):
                if row["strategy"] in UNSCORED or mode_of(row["verifier"]) in args.verifiers:
                    report(row)
    for mode in args.verifiers:
        for strategy in args.strategies:
            if strategy in shared:
                continue
            if mode != "exact" and VARIANTS.get(strategy, (strategy,))[0] in UNSCORED:
                continue  # its verifier is never called: the noisy run would repeat the exact one
            for n in args.budgets:
                v = verifier_for(strategy, mode, args.flip_rate, args.seed)
                row = asyncio.run(cell(engine, problems, strategy, n, v, args.seed))
                if row:
                    report(row)
    engine.close()
    print_tables(rows)
    result = save(rows, complete=True)
    plot(rows, out.with_suffix(".png"))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
