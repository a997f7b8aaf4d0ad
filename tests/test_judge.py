"""LLM-as-judge plumbing on the embedded model (its char tokenizer makes "1"/"0" the yes/no
tokens); the real-model behaviour is reported in the issue notes, not asserted here."""

import math

import pytest
from ponder.engine import Engine
from ponder.engine.outputs import Logprob
from ponder.tasks.registry import make_verifier
from ponder.verifiers.judge import yes_probability


@pytest.fixture(scope="module")
def engine():
    with Engine.from_pretrained(None) as e:
        yield e


def test_yes_probability_rule():
    assert yes_probability({5: Logprob(-1.0), 6: Logprob(-1.0)}, [5], [6]) == 0.5
    assert yes_probability({5: Logprob(0.0)}, [5], [6]) == 1.0
    assert yes_probability({7: Logprob(0.0)}, [5], [6]) == 0.5  # neither in the top: no opinion
    assert yes_probability({5: Logprob(-2.0), 6: Logprob(-1.0)}, [5], [6]) == pytest.approx(
        1 / (1 + math.e)
    )
    # Spellings of one verdict add up: P(yes) = 0.1 + 0.2, P(no) = 0.3.
    top = {5: Logprob(math.log(0.1)), 8: Logprob(math.log(0.2)), 6: Logprob(math.log(0.3))}
    assert yes_probability(top, [5, 8], [6, 9]) == pytest.approx(0.5)


def test_judge_scores_every_candidate_in_one_batch(engine):
    judge = make_verifier("judge", engine=engine, yes="1", no="0", template="{prompt}{candidate}")
    prompts = ["Q: 1+1\n", "Q: 2*3\n", "Q: 9-4\n"]
    scores = judge.score(prompts, ["1+1=", "2*3=", "9-4="])
    assert len(scores) == 3 and all(len(s) == 1 and 0.0 <= s[0] <= 1.0 for s in scores)
    alone = judge.score(prompts[:1], ["1+1="])[0][0]
    assert alone == pytest.approx(scores[0][0], abs=1e-6)  # batch-independent up to float error
    assert engine.kv_stats.used == 0


def test_judge_errors(engine):
    with pytest.raises(ValueError, match="exactly one of path= .* or engine="):
        make_verifier("judge")
    with pytest.raises(ValueError, match="yes token 'yes' is not a single token"):
        make_verifier("judge", engine=engine)
    with pytest.raises(ValueError, match="no token 'nope' is not a single token"):
        make_verifier("judge", engine=engine, yes=["1", "+"], no=["0", "nope"])
    with pytest.raises(ValueError, match="at least one no token spelling"):
        make_verifier("judge", engine=engine, yes="1", no=[])
    assert make_verifier("judge", engine=engine, yes=["1", "1"], no="0").yes_ids == (
        engine.tokenizer.encode("1", add_special_tokens=False)[0],
    )
    with pytest.raises(ValueError, match="template"):
        make_verifier("judge", engine=engine, yes="1", no="0", template="no fields")
