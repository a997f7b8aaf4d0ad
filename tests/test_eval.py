"""`ponder eval`: records, summary, resume after a kill (torn last line), one-line errors."""

import json

from click.testing import CliRunner
from ponder.apps.cli import main


def run(args):
    return CliRunner().invoke(main, ["eval", *args])


def test_eval_writes_records_and_resumes(tmp_path):
    out = tmp_path / "run.jsonl"
    args = ["--strategy", "majority", "--n", "2", "--level", "2", "--seed", "3", "--out", str(out)]
    first = run([*args, "--limit", "3"])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.output.strip().splitlines()[-1])
    assert summary["problems"] == 3 and 0 <= summary["accuracy"] <= 1
    header, *lines = out.read_text().splitlines()
    assert json.loads(header)["ponder_run"]["strategy"] == "majority"
    records = [json.loads(line) for line in lines]
    assert len(records) == 3 and all(r["generated_tokens"] > 0 for r in records)
    # A kill mid-write leaves a torn line: it is dropped and that problem redone.
    text = out.read_text().splitlines()
    out.write_text("\n".join(text[:3]) + "\n" + text[3][: len(text[3]) // 2])
    again = run([*args, "--limit", "5"])
    assert again.exit_code == 0, again.output
    lines = [line for line in out.read_text().splitlines()[1:] if line.strip()]
    ids = [json.loads(line)["id"] for line in lines]
    assert len(set(ids)) == 5 and ids[:2] == [r["id"] for r in records[:2]]
    assert json.loads(again.output.strip().splitlines()[-1])["problems"] == 5


def test_eval_bad_input_is_one_line(tmp_path):
    out = str(tmp_path / "x.jsonl")
    bad = run(["--strategy", "nope", "--out", out])
    assert bad.exit_code == 2 and "unknown strategy 'nope'" in bad.output
    bad = run(["--strategy", "particle", "--option", "tau=-1", "--limit", "1", "--out", out])
    assert bad.exit_code == 2 and "tau must be > 0" in bad.output
    bad = run(["--strategy", "bon", "--verifier", "nah", "--out", out])
    assert bad.exit_code == 2 and "unknown verifier" in bad.output
    bad = run(["--strategy", "bon", "--option", "novalue", "--out", out])
    assert bad.exit_code == 2 and "key=value" in bad.output
