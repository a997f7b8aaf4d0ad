"""Sampling functions, SamplingParams validation and stop rules."""

import math

import pytest
import torch
from ponder.engine.sampling_params import SamplingParams
from ponder.engine.torch_backend.sampling import (
    RowParams,
    filter_logits,
    sample,
    sample_reference,
)
from ponder.engine.torch_backend.sequence import StopRule


def test_filter_top_k_keeps_exactly_k():
    logits = torch.tensor([0.0, 3.0, 1.0, 2.0])
    out = filter_logits(logits, top_k=2, top_p=1.0, min_p=0.0)
    assert torch.isfinite(out).tolist() == [False, True, False, True]


def test_filter_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    out = filter_logits(probs.log(), top_k=0, top_p=0.8, min_p=0.0)
    # 0.5 < 0.8, 0.5 + 0.3 reaches 0.8: the first two stay, the rest go.
    assert torch.isfinite(out).tolist() == [True, True, False, False]


def test_filter_min_p_relative_to_max():
    probs = torch.tensor([0.6, 0.25, 0.1, 0.05])
    out = filter_logits(probs.log(), top_k=0, top_p=1.0, min_p=0.2)  # threshold 0.12
    assert torch.isfinite(out).tolist() == [True, True, False, False]


def test_greedy_and_raw_logprobs():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    params = [RowParams(0.0, 0, 1.0, 0.0)] * 2
    out = sample(logits, params, [None, None], num_top=2)
    assert out.token_ids == [1, 2]
    expected = torch.log_softmax(logits, dim=-1)
    assert out.logprobs == pytest.approx([expected[0, 1].item(), expected[1, 2].item()])
    assert out.top_ids == [[1, 0], [2, 0]]


def test_seeded_rows_do_not_depend_on_the_batch():
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    p = RowParams(1.0, 0, 1.0, 0.0)

    def gen(seed):
        g = torch.Generator()
        g.manual_seed(seed)
        return g

    alone = [sample(logits[1:2], [p], [gen(7)]).token_ids[0] for _ in range(1)]
    draws_alone = []
    g = gen(7)
    for _ in range(20):
        draws_alone.append(sample(logits[1:2], [p], [g]).token_ids[0])
    g1, g2, g3 = gen(1), gen(7), gen(3)
    draws_batched = [sample(logits, [p] * 3, [g1, g2, g3]).token_ids[1] for _ in range(20)]
    assert draws_alone == draws_batched
    assert alone[0] == draws_alone[0]


@pytest.mark.parametrize("vocab", [7, 104, 256, 1000, 5003])
def test_chunked_inverse_cdf_matches_the_full_cumsum(vocab):
    """`sample` (chunk sums, one chunk scanned) picks the token the plain full-CDF reference
    picks, for the same uniforms, over greedy, plain, tempered and filtered rows."""
    torch.manual_seed(vocab)
    logits = torch.randn(40, vocab) * 3
    kinds = [RowParams(1.0, 0, 1.0, 0.0), RowParams(0.0, 0, 1.0, 0.0),
             RowParams(0.7, 0, 1.0, 0.0), RowParams(1.3, 5, 0.9, 0.0),
             RowParams(1.0, 0, 1.0, 0.05)]  # fmt: skip
    params = [kinds[i % len(kinds)] for i in range(40)]
    seeds = [torch.Generator().manual_seed(100 + i) for i in range(40)]
    twins = [torch.Generator().manual_seed(100 + i) for i in range(40)]
    for _ in range(5):
        got = sample(logits, params, seeds)
        assert got.token_ids == sample_reference(logits, params, twins)
        raw = torch.log_softmax(logits, -1)
        want_lp = raw.gather(1, torch.tensor(got.token_ids)[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(got.logprobs), want_lp, atol=1e-5, rtol=1e-5)


def test_sampling_follows_the_distribution():
    probs = torch.tensor([0.7, 0.2, 0.1])
    logits = probs.log().expand(4000, 3).clone()
    g = torch.Generator()
    g.manual_seed(0)
    out = sample(logits, [RowParams(1.0, 0, 1.0, 0.0)] * 4000, [g] * 4000)
    freq = torch.bincount(torch.tensor(out.token_ids), minlength=3).float() / 4000
    assert torch.allclose(freq, probs, atol=0.03)


def test_temperature_sharpens():
    logits = torch.tensor([1.0, 0.0]).expand(3000, 2).clone()
    g = torch.Generator()
    g.manual_seed(0)
    cold = sample(logits, [RowParams(0.25, 0, 1.0, 0.0)] * 3000, [g] * 3000)
    share = sum(t == 0 for t in cold.token_ids) / 3000
    expected = 1 / (1 + math.exp(-4.0))  # softmax([4, 0])[0]
    assert abs(share - expected) < 0.02


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n=0),
        dict(temperature=-1),
        dict(top_p=0),
        dict(top_p=1.5),
        dict(top_k=-2),
        dict(min_p=2),
        dict(max_tokens=0),
        dict(stop=[""]),
        dict(logprobs=99),
    ],
)
def test_sampling_params_reject_bad_values(kwargs):
    with pytest.raises(ValueError, match="SamplingParams"):
        SamplingParams(**kwargs)


def test_sampling_params_normalise():
    p = SamplingParams(stop="\n", top_k=-1)
    assert p.stop == ("\n",) and p.top_k == 0 and not p.greedy
    assert SamplingParams(temperature=0).greedy


def decode(ids):
    return "".join(chr(i) for i in ids)


def test_stop_rule_order_and_reasons():
    rule = StopRule(
        max_new_tokens=5,
        eos_token_ids=frozenset({0}),
        stop_token_ids=frozenset({7}),
        stop_strings=("ab",),
    )
    assert rule.check([ord("x")], decode) is None
    assert rule.check([ord("x"), 0], decode) == ("stop", None)
    assert rule.check([ord("x"), 7], decode) == ("stop", 7)
    assert rule.check([ord("a"), ord("b")], decode) == ("stop", "ab")
    assert rule.check([ord(c) for c in "xyzwv"], decode) == ("length", None)


def test_stop_string_only_fires_when_it_ends_in_the_new_token():
    rule = StopRule(max_new_tokens=100, stop_strings=("\n",))
    assert rule.check([ord(c) for c in "12+3"], decode) is None
    assert rule.check([ord(c) for c in "12+3\n"], decode) == ("stop", "\n")


def test_stop_strings_decode_only_tokens_that_could_end_them():
    calls = []

    class Tok:  # a decode owner, as the engine is
        def decode(self, ids):
            calls.append(list(ids))
            return "".join(chr(i) for i in ids)

    tok = Tok()
    rule = StopRule(max_new_tokens=99, stop_strings=("ab\n",))
    ids = [ord(c) for c in "xyzab"]
    for k in range(1, len(ids) + 1):
        assert rule.check(ids[:k], tok.decode) is None
    window_decodes = [c for c in calls if len(c) > 1]
    assert window_decodes == []  # no token so far contains "\n"
    ids.append(ord("\n"))
    assert rule.check(ids, tok.decode) == ("stop", "ab\n")
    calls.clear()
    rule.check(ids[:3], tok.decode)  # standalone texts are remembered per decode owner
    assert calls == []


def test_stop_rule_agrees_with_the_window_check_on_random_text():
    import random

    rng = random.Random(0)
    rule = StopRule(max_new_tokens=10**6, stop_strings=("ab", "\n\n", "cab"))
    ids = [rng.choice([ord(c) for c in "abc\n"]) for _ in range(400)]
    for k in range(1, len(ids) + 1):
        want = rule._stop_string_ending_last(ids[:k], decode)
        got = rule.check(ids[:k], decode)
        assert got == (None if want is None else ("stop", want))
