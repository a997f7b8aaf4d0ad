"""The committed learned arith PRM on real weights, against the exact step checker on solutions
the embedded model samples for held-out problems (the distribution it was trained for).

bench/arith_reward_model.py measures it properly (step / outcome AUROC 0.80 / 0.81 on 640
solutions); this test checks a smaller sample clearly beats chance, so a broken checkpoint,
tokenisation or step layout fails it."""

import numpy as np
import pytest
from ponder.engine import Engine, SamplingParams
from ponder.tasks.arith import DEFAULT_LEVEL, generate
from ponder.tasks.registry import make_verifier


def auroc(scores, labels) -> float:
    s, y = np.asarray(scores), np.asarray(labels)
    pos, neg = s[y == 1], s[y == 0]
    return float(((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean())


@pytest.fixture(scope="module")
def sampled():
    problems = generate(30, split="heldout", seed=11, difficulty=DEFAULT_LEVEL)
    with Engine.from_pretrained(None) as engine:
        outs = engine.generate(
            [p.prompt for p in problems],
            SamplingParams(n=4, temperature=1.0, seed=11, max_tokens=320),
        )
    prompts = [p.prompt for p, o in zip(problems, outs, strict=True) for _ in o.outputs]
    return prompts, [c.text for o in outs for c in o.outputs]


def test_learned_prm_beats_chance_on_sampled_solutions(sampled):
    prompts, texts = sampled
    learned = make_verifier("arith_prm").score(prompts, texts)
    exact = make_verifier("arith_step").score(prompts, texts)
    assert [len(s) for s in learned] == [len(s) for s in exact]
    steps_pred = [x for s in learned for x in s]
    steps_true = [x for s in exact for x in s]
    assert 0.0 < np.mean(steps_true) < 1.0
    assert auroc(steps_pred, steps_true) > 0.7


def test_learned_orm_is_the_last_step_score(sampled):
    prompts, texts = sampled
    orm = make_verifier("arith_orm").score(prompts[:8], texts[:8])
    prm = make_verifier("arith_prm").score(prompts[:8], texts[:8])
    assert orm == [[s[-1]] for s in prm]
