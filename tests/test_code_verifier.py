"""The code_tests verifier and the HumanEval task: references, scoring, outcomes, and HumanEval's
canonical solutions (all 164 pass)."""

import json

import pytest
from ponder.tasks.registry import get_task, make_verifier
from ponder.verifiers.code import CodeTestsVerifier, build_program, code_reference, truncate

TEST = "def check(f):\n    assert f(2) == 4"
PROMPT = "def double(x):\n"


@pytest.fixture(scope="module")
def verifier():
    # 3 s, not 1: on a busy machine a candidate that fails must not reach the wall limit first.
    return make_verifier("code_tests", wall_seconds=3, workers=2)


@pytest.fixture(scope="module")
def humaneval():
    task = get_task("humaneval")
    return task, task.items(164, seed=0)


def test_scores_and_outcomes(verifier):
    ref = code_reference(TEST, "double")
    candidates = ["    return 2 * x\n", "    return x\n", "    while True:\n        pass\n"]
    results = verifier.run([PROMPT] * 3, candidates, [ref] * 3)
    assert [r.outcome for r in results] == ["passed", "failed", "timeout"]
    assert {r.harness for r in results} == {"remote"}
    assert "AssertionError" in results[1].stderr
    assert verifier.score([PROMPT] * 2, candidates[:2], [ref] * 2) == [[1.0], [0.0]]
    assert verifier.name == "code_tests" and verifier.process is False


def test_prefix_and_stop_sequences_come_from_the_reference(verifier):
    whole = code_reference(TEST, "double", prefix="")
    assert verifier.score(["ignored"], ["def double(x):\n    return x + x\n"], [whole]) == [[1.0]]
    # The reference's prefix wins over the (possibly re-templated) prompt the engine passes.
    own = code_reference(TEST, "double", prefix=PROMPT, stop=["\nprint"])
    tail = "    return 2 * x\nprint(undefined_name)\n"
    assert verifier.score(["<|chat|> not code"], [tail], [own]) == [[1.0]]
    program = build_program("", tail, own)
    assert program.startswith(PROMPT + "    return 2 * x\n\n") and "undefined_name" not in program


def test_bad_input_is_a_value_error(verifier):
    with pytest.raises(ValueError, match="needs references"):
        verifier.score([PROMPT], ["    return x\n"])
    with pytest.raises(ValueError, match="one reference per candidate"):
        verifier.score([PROMPT], ["    return x\n"], [])
    with pytest.raises(ValueError, match="entry_point"):
        build_program(PROMPT, "x", code_reference("", "os.system"))
    with pytest.raises(ValueError, match="JSON with 'test' and 'entry_point'"):
        build_program(PROMPT, "x", "assert True")
    with pytest.raises(ValueError, match="'stop' non-empty strings"):
        build_program(PROMPT, "x", json.dumps({"test": "", "entry_point": "f", "stop": [""]}))
    with pytest.raises(ValueError, match="'harness' is one of"):
        build_program(PROMPT, "x", json.dumps({"test": "", "entry_point": "f", "harness": "x"}))
    with pytest.raises(ValueError, match="memory_mb"):
        make_verifier("code_tests", memory_mb=1)


def test_harness_servers_are_reused_but_each_job_is_judged_fresh():
    verifier = CodeTestsVerifier(workers=1, wall_seconds=5)
    leaks = "import builtins\nbuiltins.LEAK = 1\n" + TEST
    looks = "import builtins\nassert not hasattr(builtins, 'LEAK')\n" + TEST
    refs = [code_reference(leaks, "double"), code_reference(looks, "double")]
    good = ["    return 2 * x\n"] * 2
    assert verifier.score([PROMPT] * 2, good, refs) == [[1.0], [1.0]]
    pool = verifier.harnesses
    assert pool.idle == 1  # one server judged both, each job in a fork of its own
    server = pool._idle[0]
    server.proc.kill()  # a server that died while idle is replaced, not used
    server.proc.wait()
    assert verifier.score([PROMPT], good[:1], refs[1:]) == [[1.0]]
    assert pool.idle == 1 and pool._idle[0] is not server
    verifier.close()
    assert pool.idle == 0


def test_truncate():
    assert truncate("a\ndef b\nif c", ["\nif", "\ndef"]) == "a"
    assert truncate("    if x:\n        y", ["\nif"]) == "    if x:\n        y"
    assert truncate("abc", []) == "abc"


def test_humaneval_items(humaneval):
    task, items = humaneval
    assert len(items) == 164 and items[0].id == "HumanEval/0" and items[0].answer == ""
    ref = json.loads(items[0].reference)
    assert ref["entry_point"] == "has_close_elements" and ref["prefix"] == items[0].prompt
    shuffled = task.items(5, seed=1)
    assert [i.id for i in shuffled] == [i.id for i in task.items(5, seed=1)]
    assert [i.id for i in shuffled] != [i.id for i in items[:5]]
    assert task.default_verifier(process=False) == "code_tests"
    with pytest.raises(ValueError, match="process verifier"):
        task.default_verifier(process=True)
    with pytest.raises(ValueError, match="limit"):
        task.items(-1, seed=0)


def test_humaneval_extract_answer_and_wrong_solutions_fail(humaneval):
    task, items = humaneval
    assert task.extract_answer("    return 1\n\ndef other():\n    pass") == "    return 1\n"
    assert task.extract_answer("\ndef only_a_new_function():\n") is None
    assert not task.is_correct(items[0], "    return None\n")
    assert not task.is_correct(items[0], None)


def check_canonical(items, verifier) -> None:
    results = verifier.run(
        [i.prompt for i in items],
        [i.meta["canonical_solution"] for i in items],
        [i.reference for i in items],
    )
    outcomes = zip(items, results, strict=True)
    assert not [(i.id, r.outcome, r.stderr[-200:]) for i, r in outcomes if not r.passed]


def test_humaneval_canonical_solutions_all_pass(humaneval):
    """All 164 through the remote harness (about 10-20 s on two busy cores): the sandbox's
    limits, its isolation and the plain-data wire break none."""
    task, items = humaneval
    check_canonical(items, task.verifier)
    assert task.is_correct(items[0], task.extract_answer(items[0].meta["canonical_solution"]))
