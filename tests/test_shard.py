"""Sharded evaluation on a local Ray cluster started by the test (ray.init(num_cpus=2)): the
records equal an unsharded run's, a driver killed mid-run loses nothing finished and its
rerun solves only the rest (no duplicates), and `ponder eval --shards` runs end to end.

The SIGKILL test (a real driver process killed mid-run, then rerun) is marked slow:
    .venv/bin/python -m pytest -q -m slow tests/test_shard.py
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import pytest

ray = pytest.importorskip("ray", reason="sharding needs Ray (extra: ray)")

from ponder.apps.evaluate import EvalSettings, run_eval  # noqa: E402
from ponder.apps.run_file import RunFile  # noqa: E402
from ponder.apps.setup import prepare_eval  # noqa: E402
from ponder.apps.shard import ShardSpec, eval_sharded  # noqa: E402

LIMIT = 6


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def prepared(strategy="bon", n=4):
    setup = prepare_eval(
        task="arith", task_options={"level": 2}, strategy=strategy, options={},
        verifier_name=None, verifier_options={}, n=n, seed=3, temperature=1.0, limit=LIMIT,
    )  # fmt: skip
    return setup, EvalSettings(**setup.settings)


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


def test_sharded_records_equal_an_unsharded_run(cluster, tmp_path):
    from ponder.engine import Engine

    setup, settings = prepared()
    sharded = eval_sharded(ShardSpec(settings), setup.items, tmp_path / "s.jsonl", shards=2)
    with Engine.from_pretrained() as engine:
        local, _ = run_eval(engine, setup.task, setup.items, settings, setup.verifier,
                            tmp_path / "l.jsonl")  # fmt: skip
    assert [r["id"] for r in sharded] == [it.id for it in setup.items]
    keys = ("id", "truth", "predicted", "answers", "correct")
    assert [{k: r[k] for k in keys} for r in sharded] == [{k: r[k] for k in keys} for r in local]
    assert sorted(r["id"] for r in lines(tmp_path / "s.jsonl")) == sorted(r["id"] for r in local)


def test_killed_driver_resumes_without_loss_or_duplicates(cluster, tmp_path):
    setup, settings = prepared()
    out, seen = tmp_path / "run.jsonl", []

    def crash_after_two(record):
        seen.append(record["id"])
        if len(seen) == 2:
            raise KeyboardInterrupt  # the driver dies with work in flight on the actors

    with pytest.raises(KeyboardInterrupt):
        eval_sharded(ShardSpec(settings), setup.items, out, shards=2, on_record=crash_after_two)
    first = lines(out)
    assert [r["id"] for r in first] == seen  # what was reported is on disk, nothing more
    with out.open("a") as sink:
        sink.write('{"id": "torn')  # and a kill mid-write leaves a torn line
    resumed = []
    records = eval_sharded(ShardSpec(settings), setup.items, out, shards=2,
                           on_record=lambda r: resumed.append(r["id"]))  # fmt: skip
    assert sorted(resumed) == sorted(set(it.id for it in setup.items) - set(seen))
    on_disk = lines(out)
    assert sorted(r["id"] for r in on_disk) == sorted(it.id for it in setup.items)  # no dupes
    assert on_disk[:2] == first and [r["id"] for r in records] == [it.id for it in setup.items]
    assert eval_sharded(ShardSpec(settings), setup.items, out, shards=2) == records  # all done
    assert RunFile.open(out, asdict(settings)).records == on_disk


def test_spec_checks_and_cli(cluster, tmp_path):
    from click.testing import CliRunner
    from ponder.apps.cli import main

    _, settings = prepared()
    with pytest.raises(ValueError, match="urls go with"):
        ShardSpec(settings, backend="remote")
    out = tmp_path / "cli.jsonl"
    args = ["eval", "--level", "2", "--limit", "3", "--n", "2", "--shards", "2", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["problems"] == 3 and len(lines(out)) == 3
    bad = CliRunner().invoke(main, [*args[:-2], "--url", "http://x", "--out", str(out)])
    assert bad.exit_code == 2 and "--url goes with --backend remote" in bad.output


@pytest.mark.slow
def test_sigkilled_cli_driver_then_rerun(tmp_path):
    """A real `ponder eval --shards 2` process, SIGKILLed once two records are on disk."""
    out = tmp_path / "killed.jsonl"
    flags = [
        "--level",
        "3",
        "--limit",
        "12",
        "--n",
        "8",
        "--strategy",
        "particle",
        "--shards",
        "2",
        "--out",
    ]
    command = [sys.executable, "-m", "ponder.apps.cli", "eval", *flags, str(out)]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None:
        if out.exists() and len(out.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    assert driver.poll() is None, driver.stdout.read().decode()[-2000:]
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
    driver.wait()
    before = lines(out)
    assert 2 <= len(before) < 12
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    after = lines(out)
    assert after[: len(before)] == before and len({r["id"] for r in after}) == len(after) == 12
