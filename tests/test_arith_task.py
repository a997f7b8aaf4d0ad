"""The arith task: determinism, split separation, reference solutions, tokenizer round trip."""

import pytest
from ponder.tasks.arith import LEVELS, Difficulty, generate, make_problem
from ponder.tasks.arith.problems import evaluate, split_of, tokenize_expression
from ponder.tasks.arith.tokenizer import build_tokenizer
from transformers import AutoTokenizer


def test_generation_is_deterministic_and_distinct():
    a = generate(50, split="train", seed=1, difficulty=3)
    assert a == generate(50, split="train", seed=1, difficulty=3)
    assert a != generate(50, split="train", seed=2, difficulty=3)
    assert len({p.expression for p in a}) == 50


@pytest.mark.parametrize("lv", sorted(LEVELS))
def test_splits_are_disjoint_by_construction(lv):
    train = generate(2000, split="train", seed=0, difficulty=lv)
    held = generate(300, split="heldout", seed=0, difficulty=lv)
    assert not {p.expression for p in train} & {p.expression for p in held}
    assert all(split_of(p.expression) == "train" for p in train)
    assert all(p.split == "heldout" for p in held)
    assert all(len(tokenize_expression(p.expression)) == 2 * LEVELS[lv].num_ops + 1 for p in held)


def test_reference_steps_reproduce_the_answer():
    for p in generate(300, split="heldout", seed=4, difficulty=6):
        assert p.answer == evaluate(tokenize_expression(p.expression))
        assert len(p.steps) == LEVELS[6].num_ops
        assert p.steps[-1].endswith(f";{p.answer}")
        assert p.solution.endswith(f"\nA: {p.answer}") and p.prompt.endswith("\n")


def test_make_problem_and_difficulty_errors():
    p = make_problem("12+7*3-5")
    assert p.steps == ("7*3=21;12+21-5", "12+21=33;33-5", "33-5=28;28") and p.answer == 28
    with pytest.raises(ValueError, match="outside"):
        make_problem("1-5")
    with pytest.raises(ValueError, match="unexpected character"):
        make_problem("1/5")
    with pytest.raises(ValueError, match="unexpected character"):
        make_problem("١+٢")  # Arabic-Indic digits are not ASCII digits
    small = generate(50, split="train", seed=0, difficulty=Difficulty(num_ops=3, max_operand=3))
    assert all(x <= 3 for p in small for x in tokenize_expression(p.expression)[::2])
    with pytest.raises(ValueError, match="num_ops"):
        Difficulty(num_ops=0, max_operand=9)
    with pytest.raises(ValueError, match="split"):
        generate(1, split="test")
    with pytest.raises(ValueError, match="level"):
        generate(1, split="train", difficulty=42)


def test_tokenizer_round_trip_and_hf_loading(tmp_path):
    tok = build_tokenizer()
    p = generate(1, split="heldout", seed=0)[0]
    text = p.prompt + p.solution
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id and len(ids) == len(text) + 1  # one token per character
    assert tok.decode(ids, skip_special_tokens=True) == text
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(text).input_ids == ids
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (1, 2, 0)
