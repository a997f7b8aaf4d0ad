"""bench/strategies.py and bench/search_failures.py: the shared draw picks what each strategy
picks, merging slices, and the failure classifier."""

import pytest
from scripted import request, run


def load_bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "strategies.py"
    spec = importlib.util.spec_from_file_location("bench_strategies", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_bench_shared_draw_picks_what_each_strategy_picks():
    """bench/strategies.py scores one BoN draw and applies the other sampling strategies'
    selection rules to it; on the same samples that must be exactly what each strategy returns
    (random answers and scores, many seeds, ties included)."""
    bench = load_bench()

    def policy(text, rng):
        return f"A: {rng.choice('abcdef')}@{rng.choice([0.1, 0.5, 0.9])}<eos>"

    for seed in range(40):
        drawn, _ = run("bon", policy, request(16, process=False), seed=seed)
        answers = [c.answer for c in drawn.candidates]
        scores = [c.score for c in drawn.candidates]
        for rule in bench.SHARED:
            options = bench.OPTIONS.get(rule, {})
            own, _ = run(rule, policy, request(16, process=False), seed=seed, **options)
            assert [c.answer for c in own.candidates] == answers  # the same draw
            assert bench.select(rule, answers, scores) == own.answer, (rule, seed)


def test_bench_merge_keeps_the_first_row_sorts_and_refuses_other_settings(tmp_path):
    import json

    bench = load_bench()
    head = {"bench": "strategies", "problems": 5, "level": 6, "seed": 0, "flip_rate": 0.1}

    def row(strategy, n, verifier, accuracy, tokens):
        return {
            "strategy": strategy,
            "n": n,
            "verifier": verifier,
            "accuracy": accuracy,
            "mean_tokens": tokens,
            "mean_verifier_calls": n,
            "seconds": 1.0,
        }

    new = [
        row("bon_adaptive", 8, "arith_outcome", 0.8, 300),
        row("bon", 8, "arith_outcome", 0.9, 800),
    ]
    old = [row("bon", 8, "arith_outcome", 0.1, 1), row("beam", 4, "noisy_arith_step", 0.7, 400)]
    old += [row("bon", 4, "arith_outcome", 0.7, 400), row("sample", 1, "arith_outcome", 0.6, 100)]
    paths = []
    for name, rows in (("new", new), ("old", old)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps({**head, "budgets": [4, 8], "rows": rows}))
    bench.merge(paths, tmp_path / "merged.json")
    merged = json.loads((tmp_path / "merged.json").read_text())
    keys = [(r["strategy"], r["n"], r["accuracy"]) for r in merged["rows"]]
    assert keys == [
        ("sample", 1, 0.6),
        ("bon", 4, 0.7),
        ("bon", 8, 0.9),  # the first file's row wins
        ("beam", 4, 0.7),
        ("bon_adaptive", 8, 0.8),
    ]
    assert merged["adaptive_savings"][0]["tokens_saved"] == round(1 - 300 / 800, 4)
    assert (tmp_path / "merged.png").stat().st_size > 0
    paths[1].write_text(json.dumps({**head, "seed": 1, "budgets": [4], "rows": old}))
    with pytest.raises(SystemExit, match="differs"):
        bench.merge(paths, tmp_path / "merged.json")


def test_search_failures_finds_the_step_every_branch_went_wrong():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "search_failures.py"
    spec = importlib.util.spec_from_file_location("search_failures", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    trace = [{"iteration": 0}, {"step": 1, "scores": [1.0, 0.0]}, {"step": 2, "scores": [0.0, 0.2]}]
    assert bench.lost_step(trace) == 2
    assert bench.lost_step(trace[:2]) is None

    def steps(score):
        return lambda text, rng: "A: 1@1<eos>" if text.count("\n") >= 2 else f"s@{score}\n"

    result, _ = run("particle", steps(0.9), request(4))
    assert bench.lost_step(result.trace) is None
    result, _ = run("particle", steps(0.1), request(4))
    assert bench.lost_step(result.trace) == 1


@pytest.mark.parametrize(("strategy", "n"), [("particle", 4), ("bom", 4)])
def test_ponder_eval_reproduces_a_bench_cell(tmp_path, strategy, n):
    """Same problems, seeds, options and verifier: `ponder eval` gives the bench cell's numbers
    exactly (one per-problem seed derivation, strategies seeded by the request)."""
    import asyncio
    import json

    from click.testing import CliRunner
    from ponder.apps.cli import main
    from ponder.engine import Engine
    from ponder.tasks.arith import DEFAULT_LEVEL, generate

    bench = load_bench()
    problems = generate(6, split="heldout", seed=0, difficulty=DEFAULT_LEVEL)
    verifier = bench.verifier_for(strategy, "exact", 0.1, 0)
    with Engine.from_pretrained() as engine:
        row = asyncio.run(bench.cell(engine, problems, strategy, n, verifier, 0))
    options = [f"--option={k}={v}" for k, v in bench.OPTIONS.get(strategy, {}).items()]
    out = tmp_path / "run.jsonl"
    result = CliRunner().invoke(
        main, ["eval", "--strategy", strategy, "--n", str(n), "--limit", "6", "--out", str(out),
               "--verifier", verifier.name, *options],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["accuracy"] == row["accuracy"]
    assert round(summary["mean_generated_tokens"], 1) == row["mean_tokens"]
