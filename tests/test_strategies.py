"""Strategies against the fake backend with scripted steps and scores (selection, voting and
tie rules, resampling, pruning, budget stops, accounting, no leaked branches), plus one small
end-to-end run of every strategy on the embedded model."""

import asyncio
from dataclasses import replace

import pytest
from ponder.engine.fake_backend import FakeContext
from ponder.strategies import STRATEGIES, Budget, SearchRequest
from ponder.strategies.bom import best_of_majority
from ponder.strategies.particle import resampling_weights
from ponder.strategies.voting import majority_vote, weighted_majority_vote
from scripted import cycling, request, run, step_policy

PROCESS_STRATEGIES = {name for name, s in STRATEGIES.items() if s.process}


def test_voting_tie_rule_and_none():
    assert majority_vote(["b", "a", "a", "b"]) == "b"  # tie: first occurrence wins
    assert majority_vote([None, "x", None]) == "x"
    assert majority_vote([None, None]) is None
    assert weighted_majority_vote(["a", "b", "b"], [0.9, 0.5, 0.3]) == "a"
    assert weighted_majority_vote(["a", "b"], [0.5, 0.5]) == "a"


def test_bon_picks_the_best_score_and_the_first_of_ties():
    result, ctx = run("bon", cycling(["A: 1@0.2", "A: 2@0.9", "A: 3@0.9"]), request(3))
    assert result.answer == "2" and len(result.candidates) == 3
    assert ctx.stats.verifier_calls == 3 and ctx.stats.generated_tokens > 0


def test_sample_takes_one():
    result, ctx = run("sample", cycling(["A: 7@0.1"]), request(5))
    assert result.answer == "7" and len(result.candidates) == 1 and ctx.stats.verifier_calls == 0


def test_majority_and_adaptive_stopping_saves_samples():
    sols = ["A: 4@0", "A: 4@0", "A: 4@0", "A: 4@0", "A: 5@0", "A: 6@0", "A: 7@0", "A: 8@0"]
    full, ctx_full = run("majority", cycling(sols), request(8))
    early, ctx_early = run("majority", cycling(sols), request(8), adaptive=True, wave=4)
    assert full.answer == early.answer == "4"
    assert len(early.candidates) == 4 and early.trace[-1]["stopped_early"]
    assert ctx_early.stats.generated_tokens < ctx_full.stats.generated_tokens


def test_adaptive_majority_does_not_stop_while_the_vote_can_flip():
    sols = ["A: 4@0", "A: 4@0", "A: 5@0", "A: 6@0", "A: 5@0", "A: 5@0", "A: 5@0", "A: 5@0"]
    result, _ = run("majority", cycling(sols), request(8), adaptive=True, wave=4)
    assert result.answer == "5" and len(result.candidates) == 8


def test_adaptive_bon_stops_at_a_top_score_with_the_same_answer():
    sols = ["A: 1@0.2", "A: 2@0.5", "A: 3@1.0", "A: 4@1.0", "A: 5@0.1", "A: 6@0.3"] + ["A: 7@1"] * 2
    full, ctx_full = run("bon", cycling(sols), request(8, process=False), wave=2)
    early, ctx_early = run("bon", cycling(sols), request(8, process=False), wave=2, stop_score=1.0)
    assert full.answer == early.answer == "3"
    assert len(early.candidates) == 4 and early.trace[-1]["stopped_early"]
    assert ctx_early.stats.generated_tokens < ctx_full.stats.generated_tokens
    never, _ = run("bon", cycling(["A: 1@0.5"]), request(6, process=False), stop_score=1.0)
    assert len(never.candidates) == 6 and "stopped_early" not in never.trace[-1]


def test_confidence_majority_stops_before_the_exact_rule():
    from ponder.strategies.majority import leader_confidence

    assert leader_confidence({"a": 3}) == 15 / 16  # P(Beta(4, 1) > 1/2) = 1 - 2**-4
    assert leader_confidence({"a": 2, "b": 2}) == 0.5
    assert leader_confidence({}) == 0.5
    sols = ["A: 4@0"] * 5 + ["A: 5@0"] * 11
    exact, _ = run("majority", cycling(sols), request(16), adaptive=True, wave=1)
    confident, _ = run("majority", cycling(sols), request(16), wave=1, confidence=0.95)
    # 3 votes: 1 - 2**-4 < 0.95; 4 votes: 1 - 2**-5 >= 0.95
    assert len(confident.candidates) == 4 < len(exact.candidates)
    assert confident.answer == "4" and exact.answer == "5"  # the risk the threshold takes
    with pytest.raises(ValueError, match="confidence"):
        run("majority", cycling(sols), request(4), confidence=1.0)


def test_weighted_majority_uses_scores():
    sols = ["A: 1@0.9", "A: 2@0.2", "A: 2@0.3"]
    result, _ = run("weighted_majority", cycling(sols), request(3, process=False))
    assert result.answer == "1"


def test_bom_filter_and_limits():
    answers = ["a", "a", "a", "b", "c", "c"]
    scores = [0.5, 0.5, 0.5, 0.99, 0.6, 0.6]
    assert best_of_majority(answers, scores, alpha=0.0, k=1) == ["b"]  # alpha 0: best of N
    assert best_of_majority(answers, scores, alpha=0.3, k=1) == ["c"]  # b (1/6) filtered
    assert best_of_majority(answers, scores, alpha=0.3, k=3) == ["c", "a", "b"]  # topped up
    constant = [1.0] * 6
    assert best_of_majority(answers, constant, alpha=0.5, k=1) == ["a"]  # = majority vote
    sols = ["A: a@0.5", "A: a@0.5", "A: b@0.99"]
    result, _ = run("bom", cycling(sols), request(3, process=False), alpha=0.5, k=2)
    assert result.answers == ["a", "b"] and result.answer == "a"
    with pytest.raises(ValueError, match="alpha"):
        run("bom", cycling(sols), request(3), alpha=2.0)


def test_adaptive_bom_stops_once_the_top_answers_pass_the_filter():
    # alpha 0.25 of n=8: an answer needs 2 samples. "b" is all-max but rare at first, so the
    # rule waits for it rather than stopping on the later "c".
    sols = ["A: a@0", "A: b@1", "A: c@1", "A: c@1", "A: b@1", "A: d@0", "A: e@0", "A: f@0"]
    full, ctx_full = run("bom", cycling(sols), request(8, process=False), alpha=0.25)
    early, ctx_early = run(
        "bom", cycling(sols), request(8, process=False), alpha=0.25, wave=1, stop_score=1.0
    )
    assert full.answer == early.answer == "b"
    assert len(early.candidates) == 5 and early.trace[-1]["stopped_early"]
    assert ctx_early.stats.generated_tokens < ctx_full.stats.generated_tokens
    never, _ = run("bom", cycling(["A: a@0.5"]), request(6, process=False), stop_score=1.0)
    assert len(never.candidates) == 6 and "stopped_early" not in never.trace[-1]


@pytest.mark.parametrize("alpha,k", [(0.0, 1), (0.1, 1), (0.25, 1), (0.2, 2), (0.3, 3)])
def test_adaptive_bom_returns_what_the_full_draw_returns(alpha, k):
    import random

    rng = random.Random(f"{alpha}-{k}")
    for _ in range(40):
        n = rng.choice([4, 8, 12])
        correct = {a: rng.random() < 0.4 for a in "abcde"}  # score depends only on the answer
        picks = [rng.choice("aabbcde") for _ in range(n)]
        sols = [f"A: {a}@{int(correct[a])}" for a in picks]
        req = request(n, process=False)
        full, _ = run("bom", cycling(sols), req, alpha=alpha, k=k)
        early, _ = run("bom", cycling(sols), req, alpha=alpha, k=k, wave=1, stop_score=1.0)
        assert early.answers == full.answers, (sols, early.answers, full.answers)


def test_beam_keeps_the_best_paths():
    result, ctx = run("beam", step_policy(), request(16, aggregation="min"), beam_width=4)
    assert result.answer == "3"  # min-aggregated beams keep all-good paths
    assert all(len(t["kept"]) <= 4 for t in result.trace)
    with pytest.raises(ValueError, match="multiple"):
        run("beam", step_policy(), request(6), beam_width=4)


def test_particle_resampling_concentrates_on_good_particles():
    assert resampling_weights([0.5, 0.5], 1.0) == pytest.approx([0.5, 0.5])
    w = resampling_weights([0.9, 0.1], 1.0)
    assert w[0] / w[1] == pytest.approx(81.0, rel=1e-6)  # odds ratio (0.9/0.1) / (0.1/0.9)
    result, ctx = run("particle", step_policy(), request(16, aggregation="min"), seed=3)
    good = sum(c.answer == "3" for c in result.candidates)
    assert result.answer == "3" and good >= 8
    assert any("resampled" in t for t in result.trace)


def test_particle_gibbs_keeps_a_reference_and_finds_good_paths():
    result, ctx = run(
        "particle_gibbs", step_policy(), request(8, aggregation="min"), iterations=3, seed=1
    )
    assert result.answer == "3" and len(result.candidates) == 8
    assert [t["iteration"] for t in result.trace if "iteration" in t] == [0, 1, 2]
    assert any(t.get("reference") for t in result.trace)
    with pytest.raises(ValueError, match="n >= 2"):
        run("particle_gibbs", step_policy(), request(1), iterations=2)


def test_particle_gibbs_releases_prefixes_no_history_holds():
    """Resampled-away particles and the previous iteration's non-reference particles are
    released during the search: the live set stays near N x steps, not all N x steps x
    iterations branches ever produced."""

    async def go():
        ctx = FakeContext(step_policy(depth=6), seed=0)
        peak, extend = [0], ctx.extend

        async def watched(*args, **kwargs):
            peak[0] = max(peak[0], len(ctx.live))
            return await extend(*args, **kwargs)

        ctx.extend = watched
        req = request(8, aggregation="min")
        result = await STRATEGIES["particle_gibbs"](ctx, replace(req, seed=1), iterations=4)
        assert ctx.live == set()
        return result, peak[0]

    result, peak = asyncio.run(go())
    produced = result.stats["verifier_calls"]  # every branch produced was scored once
    assert peak <= 8 * 7 * 2  # this iteration's histories and the reference's
    assert produced > 3 * 8 * 6 and peak < produced / 2


def test_dvts_and_astar_find_good_paths():
    result, _ = run("dvts", step_policy(), request(16, aggregation="min"), beam_width=4)
    assert result.answer == "3" and len(result.candidates) == 16
    result, ctx = run("astar", step_policy(), request(4), k=4)
    assert result.answer == "3"
    assert len(result.trace) <= 16


def test_astar_revisits_a_sound_state_whose_samples_all_failed():
    """From the sound first step, the first k samples are unsound (score 0.1), later ones are
    sound. Expanded once, the state is lost and the search ends on the unsound path; allowed
    a second expansion, it samples again and finds the sound answer."""

    def policy(text, rng):
        steps = text.count("\n")
        if steps == 0:  # one sound first step, three dead ones
            seen[0] += 1
            return "s@1\n" if seen[0] == 1 else "x@0\n"
        if steps == 1:
            seen[1] += 1
            return "bad@0.1\n" if seen[1] <= 4 else "ok@1\n"
        return ("A: good@1" if "ok@" in text else "A: bad@0.1") + "<eos>"

    seen = [0, 0]
    result, _ = run("astar", policy, request(4), k=4, revisit=1)
    assert result.answer == "bad"
    seen = [0, 0]
    result, _ = run("astar", policy, request(4), k=4, revisit=2)
    assert result.answer == "good"
    assert [t["visit"] for t in result.trace if t["depth"] == 1] == [1, 2]
    with pytest.raises(ValueError, match="revisit"):
        run("astar", policy, request(4), revisit=0)


def test_astar_samples_the_root_again_when_every_first_step_failed():
    """The first k first steps are all unsound. Expanded once, the root is lost and the search
    ends below a wrong step; revisited (at the optimistic f), it samples sound first steps."""

    def policy(text, rng):
        if text.count("\n") == 0:
            seen[0] += 1
            return "x@0\n" if seen[0] <= 4 else "s@1\n"
        return ("A: good@1" if "s@" in text else "A: bad@0") + "<eos>"

    seen = [0]
    result, _ = run("astar", policy, request(4), k=4, revisit=1)
    assert result.answer == "bad"
    seen = [0]
    result, _ = run("astar", policy, request(4), k=4, revisit=2)
    assert result.answer == "good"
    assert [t["visit"] for t in result.trace if t["depth"] == 0] == [1, 2]


def test_astar_falls_back_on_a_pruned_finished_state():
    """A finished state with a low f is pruned from a tiny open list while unfinished states
    keep it full; when the expansions run out, that finished solution is the answer, not an
    unfinished path (and nothing leaks: `run` checks)."""

    def policy(text, rng):
        calls[0] += 1
        return "A: fin@0.2<eos>" if calls[0] == 1 else "g@0.9\n"

    calls = [0]
    result, _ = run("astar", policy, request(4), k=4, max_open=2, max_expansions=3)
    assert result.answer == "fin"
    assert len(result.trace) == 3


def test_astar_completes_the_best_open_state_when_no_state_finished():
    """One expansion, no finished state: by default the best open state is sampled to the end
    once (one more sample and verifier call); complete=False returns the partial path."""

    def policy(text, rng):
        return "A: done@1<eos>" if text.count("\n") >= 3 else "g@0.9\n"

    result, ctx = run("astar", policy, request(4), k=4, max_expansions=1)
    assert result.answer == "done" and result.candidates[0].finished
    assert result.trace[-1]["rollout"] == 1
    assert ctx.stats.verifier_calls == 4 + 1
    result, _ = run("astar", policy, request(4), k=4, max_expansions=1, complete=False)
    assert result.answer is None and not result.candidates[0].finished


def test_process_strategies_need_a_process_verifier():
    for name in sorted(PROCESS_STRATEGIES):
        with pytest.raises(ValueError, match="process verifier"):
            run(name, step_policy(), request(4, process=False))


def test_budget_stops_early():
    sols = ["A: 1@0.5"]
    tokens_per_sample = len("A: 1@0.5") + 1
    req = request(16, budget=Budget(max_tokens=3 * tokens_per_sample))
    result, ctx = run("bon", cycling(sols), req, wave=2)
    assert len(result.candidates) == 4  # two waves of two: the budget is checked between waves
    result, ctx = run("particle", step_policy(depth=30), request(8, budget=Budget(max_tokens=200)))
    assert ctx.stats.generated_tokens < 200 + 8 * 6


# ---------------------------------------------------------------- end to end on the engine


@pytest.fixture(scope="module")
def engine():
    import torch
    from ponder.engine import Engine

    torch.set_num_threads(1)
    eng = Engine.from_pretrained(None, num_blocks=2048)
    yield eng
    assert eng.kv_stats.used == 0
    eng.close()


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_end_to_end(engine, name):
    from ponder.engine import SamplingParams
    from ponder.tasks.arith import generate
    from ponder.tasks.arith.verifiers import extract_answer
    from ponder.tasks.registry import make_verifier

    problem = generate(1, split="heldout", seed=21, difficulty=3)[0]
    process = name in PROCESS_STRATEGIES
    verifier = make_verifier("arith_step" if process else "arith_outcome")
    req = SearchRequest(
        prompt=problem.prompt, verifier=verifier, n=4, extract_answer=extract_answer
    )

    async def go():
        async with engine.search(SamplingParams(temperature=1.0), seed=0) as ctx:
            return await STRATEGIES[name](ctx, req)

    result = asyncio.run(go())
    assert result.candidates and result.stats["generated_tokens"] > 0
    assert result.answer is None or result.answer.isdigit()
    assert engine.kv_stats.used == 0


def test_decided_respects_the_tie_rule():
    from ponder.strategies.majority import decided

    assert decided({"a": 4.0}, remaining=4, max_weight=1.0)  # a new answer can only tie: a wins
    assert not decided({"a": 4.0}, remaining=5, max_weight=1.0)
    assert not decided({"b": 1.0, "a": 4.0}, remaining=3, max_weight=1.0)  # b first: tie -> b
    assert decided({"a": 4.0, "b": 1.0}, remaining=3, max_weight=1.0)  # b after a: tie -> a
    assert not decided({}, remaining=0, max_weight=1.0)


def test_request_and_budget_validation():
    with pytest.raises(ValueError, match="n must be"):
        SearchRequest(prompt="Q", n=0)
    with pytest.raises(ValueError, match="step_delimiter"):
        SearchRequest(prompt="Q", step_delimiter="")
    with pytest.raises(ValueError, match="max_tokens"):
        Budget(max_tokens=0)
