"""Searching under a constraint: the task's answer format (Task.answer_constraint) through the
one-call API (SearchRequest.structured_outputs) and `ponder eval --constrain-answer`. At a
temperature where free sampling often garbles the answer line, every finished candidate of a
whole-solution strategy (bon) and of a step-level one (particle, whose steps carry the grammar
state from extend to extend) has an answer that parses."""

import asyncio
import json

import pytest
from click.testing import CliRunner
from ponder.apps.cli import main
from ponder.engine import Engine
from ponder.strategies import SearchRequest, run
from ponder.tasks.registry import get_task, make_verifier

TASK = get_task("arith", level=6)


@pytest.fixture(scope="module")
def engine():
    eng = Engine.from_pretrained(None, device="cpu")
    yield eng
    eng.close()


def test_arith_answer_constraint_and_the_request_field():
    constraint = TASK.answer_constraint()
    assert constraint.kind == "regex" and constraint.regex.endswith("A: (-?[0-9]{1,9})")
    request = SearchRequest(prompt="Q: 1+1\n", structured_outputs=constraint)
    assert request.sampling_params.structured_outputs is constraint
    assert SearchRequest(prompt="Q").sampling_params.structured_outputs is None
    with pytest.raises(ValueError, match="structured_outputs"):
        SearchRequest(prompt="Q", structured_outputs={"regex": "A"})


@pytest.mark.parametrize("strategy", ["bon", "particle"])
def test_every_finished_candidate_parses_under_the_answer_constraint(engine, strategy):
    verifier = make_verifier(TASK.default_verifier(strategy == "particle"))

    async def candidates(constraint):
        out = []
        for i, item in enumerate(TASK.items(4, seed=0)):
            request = SearchRequest(
                prompt=item.prompt,
                verifier=verifier,
                n=8,
                seed=i,
                temperature=2.0,
                max_steps=TASK.max_steps,
                max_step_tokens=TASK.max_step_tokens,
                extract_answer=TASK.extract_answer,
                structured_outputs=constraint,
            )
            out += (await run(engine, strategy, request)).candidates
        return [c for c in out if c.finished]

    free = asyncio.run(candidates(None))
    forced = asyncio.run(candidates(TASK.answer_constraint()))
    assert any(c.answer is None for c in free)  # the constraint has something to fix here
    assert forced and all(c.answer is not None for c in forced)
    assert engine.live_handles == 0 and engine.kv_stats.used == 0


def test_eval_flag_is_recorded_and_refused_without_an_answer_format(tmp_path):
    out = tmp_path / "run.jsonl"
    args = ["eval", "--strategy", "bon", "--n", "2", "--level", "2", "--limit", "2"]
    done = CliRunner().invoke(main, [*args, "--constrain-answer", "--out", str(out)])
    assert done.exit_code == 0, done.output
    header = json.loads(out.read_text().splitlines()[0])["ponder_run"]
    assert header["constrain_answer"] is True
    # A resume without the flag is another run: refused.
    again = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert again.exit_code != 0 and "constrain_answer" in again.output
    bad = CliRunner().invoke(
        main, ["eval", "--task", "gsm8k", "--constrain-answer", "--limit", "1", "--out", "x"]
    )
    assert bad.exit_code == 2 and "no answer format" in bad.output
