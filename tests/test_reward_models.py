"""ORM / PRM plumbing on tiny randomly initialised Hugging Face models (no download): shapes,
batched == one by one, padding invariance, both PRM conventions, chat templates, token errors."""

import pytest
import torch
from ponder.tasks.arith import embedded_model_path
from ponder.tasks.registry import make_verifier
from ponder.verifiers.process_reward_model import LastStepOutcome
from ponder.verifiers.reward_model import scores_of
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
)

PROMPTS = ["Q: 1+2\n", "Q: 3*4+5\n", "Q: 7\n"]
CANDIDATES = ["1+2=3;3\nA: 3", "3*4=12;12+5\n12+5=17;17\nA: 17\n", "A: 7"]


def tiny(tmp_path, cls, template=False, pad=True, **config):
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    if not pad:  # like most causal-LM tokenizers: the loader must fall back to eos as pad
        tokenizer.pad_token = None
    if template:
        tokenizer.chat_template = (
            "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        )
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id if pad else None,
        **config,
    )
    cls(cfg).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return str(tmp_path)


@pytest.mark.parametrize("labels", [1, 2])
@pytest.mark.parametrize("template", [False, True])
def test_orm_batched_equals_one_by_one(tmp_path, labels, template):
    path = tiny(tmp_path, LlamaForSequenceClassification, template=template, num_labels=labels)
    orm = make_verifier("orm", path=path, batch_size=3)
    batched = orm.score(PROMPTS, CANDIDATES)
    assert [len(s) for s in batched] == [1, 1, 1]
    single = scores_of(orm, PROMPTS, CANDIDATES)
    assert torch.allclose(torch.tensor(batched), torch.tensor(single), atol=1e-5)
    if labels == 2:
        assert all(0.0 <= s[0] <= 1.0 for s in batched)
    assert len(set(round(s[0], 6) for s in batched)) > 1  # the inputs matter
    if template:
        assert orm.render("q", "a") == orm.tokenizer.encode(
            "<user>q\n<assistant>a\n", add_special_tokens=False
        )


def test_step_token_prm_scores_each_step(tmp_path):
    path = tiny(tmp_path, LlamaForTokenClassification, num_labels=2)
    prm = make_verifier("prm", path=path, convention="step_token", batch_size=2)
    scores = prm.score(PROMPTS, CANDIDATES)
    assert [len(s) for s in scores] == [2, 3, 1]  # a trailing delimiter is not a step
    assert torch.allclose(
        torch.tensor(sum(scores, [])),
        torch.tensor(sum(scores_of(prm, PROMPTS, CANDIDATES), [])),
        atol=1e-5,
    )
    # A step's score sees only its prefix (causal): extending a candidate keeps earlier scores.
    longer = prm.score([PROMPTS[0]], [CANDIDATES[0] + "\nextra"])[0]
    assert longer[:2] == pytest.approx(scores[0], abs=1e-5) and len(longer) == 3


def test_tag_token_prm_and_token_errors(tmp_path):
    path = tiny(tmp_path, LlamaForCausalLM)
    prm = make_verifier("prm", path=path, convention="tag_token", separator="\n", good="+", bad="-")
    scores = prm.score(PROMPTS, CANDIDATES)
    assert [len(s) for s in scores] == [2, 3, 1] and all(0 < x < 1 for s in scores for x in s)
    with pytest.raises(ValueError, match="good token 'Ω' is not a single token"):
        make_verifier("prm", path=path, convention="tag_token", good="Ω")
    with pytest.raises(ValueError, match="step separator 'ab' is not a single token"):
        make_verifier("prm", path=path, convention="tag_token", separator="ab")
    with pytest.raises(ValueError, match="convention"):
        make_verifier("prm", path=path, convention="nope")


def test_orm_without_pad_token_pads_with_eos(tmp_path):
    path = tiny(tmp_path, LlamaForSequenceClassification, pad=False, num_labels=1)
    orm = make_verifier("orm", path=path, batch_size=8)
    assert orm.tokenizer.pad_token_id == orm.tokenizer.eos_token_id
    assert orm.model.config.pad_token_id == orm.tokenizer.eos_token_id
    batched = torch.tensor(orm.score(PROMPTS, CANDIDATES))
    assert torch.allclose(batched, torch.tensor(scores_of(orm, PROMPTS, CANDIDATES)), atol=1e-5)


def test_prm_padding_invariance_and_empty_candidates(tmp_path):
    path = tiny(tmp_path, LlamaForTokenClassification, num_labels=2)
    prm = make_verifier("prm", path=path, batch_size=16)
    alone = prm.score(PROMPTS[:1], CANDIDATES[:1])[0]
    # Batched with a far longer candidate (lots of right padding on this row), in any position.
    long = "\n".join(["12+34=46;46"] * 20)
    for prompts, candidates, row in [
        ([PROMPTS[0], "Q: 9\n"], [CANDIDATES[0], long], 0),
        (["Q: 9\n", PROMPTS[0]], [long, CANDIDATES[0]], 1),
    ]:
        assert prm.score(prompts, candidates)[row] == pytest.approx(alone, abs=1e-5)
    assert prm.score(["Q: 1\n", "Q: 2\n"], ["", CANDIDATES[0]])[0] == []
    # The arith_orm wrapper on a PRM: the last step's score, 0.0 for an empty candidate.
    assert LastStepOutcome(prm, name="o").score(["Q: 1\n"], [""]) == [[0.0]]


def test_bad_options(tmp_path):
    path = tiny(tmp_path, LlamaForTokenClassification, num_labels=3)
    with pytest.raises(ValueError, match="needs 2 labels"):
        make_verifier("prm", path=path)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        make_verifier("prm", path=path, batch_size=0)
