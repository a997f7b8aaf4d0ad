"""`ponder signals`: per-sample records with the align objectives' advantages, resumable, with a
Hugging Face datasets export; and the CLI's one-line errors."""

import asyncio
import json
from dataclasses import asdict

import numpy as np
import pytest
from click.testing import CliRunner
from ponder.align import group_advantages
from ponder.apps.cli import main
from ponder.apps.run_file import RunFile
from ponder.apps.signals import SignalSettings, complete_groups, to_dataset, write_signals
from ponder.engine import Engine
from ponder.tasks.registry import get_task, make_verifier


@pytest.fixture(scope="module")
def engine():
    with Engine.from_pretrained(None) as e:
        yield e


def run(engine, out, items, objective="passk", k=2, n=4):
    return asyncio.run(
        write_signals(
            engine,
            get_task("arith", split="train"),
            items,
            SignalSettings(objective, k=k, n=n, verifier="arith_outcome", seed=3),
            make_verifier("arith_outcome"),
            out,
            max_tokens=160,
        )
    )


def test_records_carry_the_objectives_advantages(engine, tmp_path):
    items = get_task("arith", split="train").items(3, seed=0)
    records = run(engine, tmp_path / "s.jsonl", items)
    assert len(records) == 12 and len((tmp_path / "s.jsonl").read_text().splitlines()) == 13
    for item in items:
        group = [r for r in records if r["prompt_id"] == item.id]
        rewards = [r["reward"] for r in group]
        assert set(rewards) <= {0.0, 1.0}
        expected = group_advantages("passk", rewards, k=2)
        assert np.allclose([r["advantage"] for r in group], expected)
        assert all(r["completion_token_ids"] and r["prompt_token_ids"] for r in group)
        assert all(r["logprob"] <= 0.0 for r in group)
    majk = run(engine, tmp_path / "m.jsonl", items[:1], objective="majk", k=4)
    answers = [r["answer"] for r in majk]
    assert np.allclose(
        [r["advantage"] for r in majk],
        group_advantages("majk", [r["reward"] for r in majk], k=4, answers=answers),
    )


def test_resume_skips_done_prompts_and_drops_a_torn_group(engine, tmp_path):
    out = tmp_path / "s.jsonl"
    items = get_task("arith", split="train").items(3, seed=0)
    first = run(engine, out, items[:2])
    lines = out.read_text().splitlines()
    # A kill in the middle of the third prompt's write: two whole lines and a torn one.
    out.write_text("\n".join(lines) + "\n" + lines[1].replace(items[0].id, items[2].id) + "\n{")
    settings = SignalSettings("passk", k=2, n=4, verifier="arith_outcome", seed=3)
    run_file = RunFile.open(out, asdict(settings))
    assert set(complete_groups(run_file, 4)) == {items[0].id, items[1].id}
    assert len(out.read_text().splitlines()) == 9  # the torn group is gone from the file
    again = run(engine, out, items)
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()[1:]]
    assert len(ids) == len(set(ids)) == 12
    assert [r for r in again if r["prompt_id"] != items[2].id] == first


def test_dataset_export_round_trips(engine, tmp_path):
    records = run(engine, tmp_path / "s.jsonl", get_task("arith", split="train").items(1, seed=0))
    dataset = to_dataset(records)
    dataset.save_to_disk(tmp_path / "ds")
    import datasets

    loaded = datasets.load_from_disk(str(tmp_path / "ds"))
    assert loaded.num_rows == 4 and loaded[0]["advantage"] == records[0]["advantage"]
    assert loaded[0]["completion_token_ids"] == records[0]["completion_token_ids"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--objective", "nope"], "unknown objective 'nope'"),
        (["--k", "9", "--n", "4"], "need 1 <= k <= n"),
        (["--objective", "bon_rl", "--k", "4", "--n", "8"], "exactly k samples"),
        (["--task", "nope"], "unknown task"),
        (["--verifier", "arith_step"], "outcome verifier"),
        (["--task-option", "split=heldout", "--task", "gsm8k"], "has no option 'split'"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, args, message):
    result = CliRunner().invoke(main, ["signals", "--out", str(tmp_path / "o.jsonl"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
