"""The one-call search API, the strategy registry's checks, and run files."""

import asyncio
import json
from dataclasses import asdict

import pytest
from click.testing import CliRunner
from ponder.apps.cli import main
from ponder.apps.run_file import RunFile
from ponder.engine.fake_backend import FakeContext
from ponder.strategies import STRATEGIES, SearchRequest, problem_seed, search, split_settings
from scripted import ScriptedVerifier, answer_of, step_policy


class FakeBackend:
    """A backend over the scripted fake: records the seeds and questions it was opened with."""

    def __init__(self, policy):
        self.policy, self.opened = policy, []

    def search(self, params=None, *, seed, question=None):
        self.opened.append((params, seed, question))
        return FakeContext(self.policy, seed=seed)


def test_search_builds_the_request_and_passes_the_rest_as_options():
    backend = FakeBackend(step_policy())
    result = asyncio.run(
        search(
            backend, "particle", "Q\n", n=4, seed=7, verifier=ScriptedVerifier(),
            extract_answer=answer_of, temperature=0.5, tau=0.5,
        )
    )  # fmt: skip
    assert result.strategy == "particle" and result.stats["samples"] >= 4
    params, seed, _ = backend.opened[0]
    assert seed == 7 and params.temperature == 0.5 and params.n == 1
    assert split_settings({"n": 2, "tau": 1.0}) == ({"n": 2}, {"tau": 1.0})


def test_same_seed_same_result_and_the_seed_reaches_the_strategy():
    def go(seed):
        return asyncio.run(
            search(FakeBackend(step_policy()), "particle", "Q\n", n=8, seed=seed,
                   verifier=ScriptedVerifier(), extract_answer=answer_of)
        )  # fmt: skip

    a, b = go(1), go(1)
    assert a.trace == b.trace and a.answer == b.answer
    assert any(go(s).trace != a.trace for s in range(2, 6))  # resampling follows the seed


@pytest.mark.parametrize(
    ("strategy", "verifier", "options", "message"),
    [
        ("particle", ScriptedVerifier(), {"taux": 1}, "has no option 'taux'; valid options"),
        ("particle", ScriptedVerifier(), {"tau": "big"}, "option 'tau' must be a number"),
        ("particle", ScriptedVerifier(), {"tau": -1}, "tau must be > 0"),
        ("particle", ScriptedVerifier(process=False), {}, "needs a process verifier"),
        ("bon", None, {}, "needs a verifier"),
        ("beam", ScriptedVerifier(), {"beam_width": 3}, "multiple of beam_width"),
        ("majority", None, {"adaptive": "yes"}, "must be true or false"),
    ],
)
def test_the_registry_refuses_bad_requests_before_any_compute(strategy, verifier, options, message):
    backend = FakeBackend(step_policy())
    with pytest.raises(ValueError, match=message):
        asyncio.run(search(backend, strategy, "Q\n", verifier=verifier, **options))
    assert backend.opened == []  # refused before a context was opened


def test_unbounded_scores_are_refused_where_they_become_weights():
    verifier = ScriptedVerifier()
    verifier.score_range = (float("-inf"), float("inf"))
    with pytest.raises(ValueError, match="scoring in \\[0, 1\\]"):
        STRATEGIES["particle"].check(SearchRequest("Q\n", verifier), {})
    STRATEGIES["beam"].check(SearchRequest("Q\n", verifier), {})  # ranking only: fine


@pytest.mark.parametrize(
    ("field", "value"),
    [("n", 2.5), ("n", 0), ("n", 10**9), ("seed", "x"), ("max_steps", 0), ("temperature", -1.0),
     ("step_delimiter", ""), ("aggregation", "median"), ("prompt", "")],
)  # fmt: skip
def test_search_request_names_the_bad_field(field, value):
    settings = {"prompt": "Q\n", field: value}
    with pytest.raises(ValueError, match=field if field != "prompt" else "empty"):
        SearchRequest(**settings)


def test_problem_seed_is_the_one_derivation():
    assert problem_seed(0, 5) == 5 and problem_seed(2, 0) != problem_seed(0, 2)


def test_run_file_refuses_other_settings_and_foreign_files(tmp_path):
    path = tmp_path / "run.jsonl"
    run = RunFile.open(path, {"strategy": "bon", "n": 2})
    run.append([{"id": "a", "x": 1}])
    assert RunFile.open(path, {"strategy": "bon", "n": 2}).records == [{"id": "a", "x": 1}]
    with pytest.raises(ValueError, match="strategy: 'bon' in the file, 'particle' now"):
        RunFile.open(path, {"strategy": "particle", "n": 2})
    assert RunFile.open(path, {"strategy": "particle", "n": 2}, restart=True).records == []
    garbage = tmp_path / "notes.txt"
    garbage.write_text("my notes\n")
    for restart in (False, True):
        with pytest.raises(ValueError, match="not a ponder run file"):
            RunFile.open(garbage, {}, restart=restart)
    assert garbage.read_text() == "my notes\n"  # never appended to
    no_id = tmp_path / "no_id.jsonl"
    no_id.write_text(json.dumps({"ponder_run": {"version": "0.1.0"}}) + "\n{}\n")
    with pytest.raises(ValueError, match="no 'id'"):
        RunFile.open(no_id, {})


def test_eval_refuses_a_resume_with_other_settings_before_the_model_loads(tmp_path):
    out = tmp_path / "run.jsonl"
    args = ["eval", "--limit", "1", "--level", "2", "--out", str(out)]
    first = CliRunner().invoke(main, [*args, "--strategy", "majority", "--n", "2"])
    assert first.exit_code == 0, first.output
    before = out.read_text()
    again = CliRunner().invoke(main, [*args, "--strategy", "majority", "--n", "4"])
    assert again.exit_code == 2 and "n: 2 in the file, 4 now" in again.output
    assert out.read_text() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "particle", "--option", "tau=abc"], "option 'tau' must be a number"),
        (["--strategy", "particle", "--option", "tau=0"], "tau must be > 0"),
        (["--verifier", "arith_noisy_step", "--verifier-option", "flip=0.1"], "no option 'flip'"),
        (["--strategy", "bon", "--verifier", "orm"], "needs option 'path'"),
    ],
)
def test_eval_bad_options_fail_before_anything_is_written(tmp_path, args, message):
    out = tmp_path / "o.jsonl"
    result = CliRunner().invoke(main, ["eval", "--out", str(out), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and not out.exists()


def test_eval_model_folder_without_a_model_is_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(
        main, ["eval", "--model", str(empty), "--limit", "1", "--out", str(tmp_path / "o.jsonl")]
    )
    assert result.exit_code == 2 and "not a Hugging Face model folder" in result.output
    assert "Traceback" not in result.output


def test_settings_round_trip_through_the_header(tmp_path):
    from ponder.apps.evaluate import EvalSettings

    settings = EvalSettings(strategy="bon", n=4, verifier="arith_outcome", options={"wave": 2})
    run = RunFile.open(tmp_path / "r.jsonl", asdict(settings))
    header = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])["ponder_run"]
    assert header["options"] == {"wave": 2} and header["version"] and run.records == []


def test_eval_config_file_supplies_options_and_flags_win(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"options": {"tau": -1.0}, "verifier_options": {}}))
    out = tmp_path / "o.jsonl"
    args = ["eval", "--strategy", "particle", "--config", str(config), "--out", str(out)]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 2 and "tau must be > 0" in refused.output
    config.write_text(json.dumps({"nope": {}}))
    assert "must be a JSON object with keys" in CliRunner().invoke(main, args).output
