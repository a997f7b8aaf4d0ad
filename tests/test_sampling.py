"""Sampling functions, SamplingParams validation and stop rules."""

import math

import pytest
import torch
from ponder.engine.sampling_params import SamplingParams
from ponder.engine.torch_backend import cpu_kernels
from ponder.engine.torch_backend.sampling import (
    RowParams,
    filter_logits,
    sample,
    sample_reference,
    uniforms,
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
    out = sample(logits, params, [0, 0], [0, 0], num_top=2)
    assert out.token_ids == [1, 2]
    expected = torch.log_softmax(logits, dim=-1)
    assert out.logprobs == pytest.approx([expected[0, 1].item(), expected[1, 2].item()])
    assert out.top_ids == [[1, 0], [2, 0]]


def test_seeded_rows_do_not_depend_on_the_batch():
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    p = RowParams(1.0, 0, 1.0, 0.0)
    alone = [sample(logits[1:2], [p], [7], [k]).token_ids[0] for k in range(20)]
    batched = [sample(logits, [p] * 3, [1, 7, 3], [k, k, 5]).token_ids[1] for k in range(20)]
    assert alone == batched
    assert len(set(alone)) > 1  # the counter moves the stream


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
    seeds = [100 + i for i in range(40)]
    for k in range(5):
        got = sample(logits, params, seeds, [k] * 40)
        assert got.token_ids == sample_reference(logits, params, seeds, [k] * 40)
        raw = torch.log_softmax(logits, -1)
        want_lp = raw.gather(1, torch.tensor(got.token_ids)[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(got.logprobs), want_lp, atol=1e-5, rtol=1e-5)


def test_sampling_follows_the_distribution():
    probs = torch.tensor([0.7, 0.2, 0.1])
    logits = probs.log().expand(4000, 3).clone()
    out = sample(logits, [RowParams(1.0, 0, 1.0, 0.0)] * 4000, [0] * 4000, range(4000))
    freq = torch.bincount(torch.tensor(out.token_ids), minlength=3).float() / 4000
    assert torch.allclose(freq, probs, atol=0.03)


def splitmix64_draw(seed: int, k: int) -> float:
    """The textbook SplitMix64 in Python integers: draw k of the stream started at mix(seed)."""
    mask = 2**64 - 1

    def mix(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    return (mix((mix(seed) + (k + 1) * 0x9E3779B97F4A7C15) & mask) >> 40) / 2**24


def test_uniforms_are_splitmix64_draws_of_seed_and_counter():
    seeds = [0, 1, 2**63 - 1, 2**64 - 1, 1234567890123, 7]
    counters = [0, 0, 5, 2**40, 17, 2**64 - 2]
    got = uniforms(seeds, counters).tolist()
    assert got == [splitmix64_draw(s, k) for s, k in zip(seeds, counters, strict=True)]
    # Entry by entry: a pure function of its own pair, whatever else is in the call.
    assert [uniforms([s], [k]).item() for s, k in zip(seeds, counters, strict=True)] == got


def ks_statistic(u: torch.Tensor) -> float:
    """Kolmogorov-Smirnov distance between the sample `u` and Uniform[0, 1)."""
    x = u.double().sort().values
    n = x.numel()
    above = torch.arange(1, n + 1, dtype=torch.float64) / n - x
    below = x - torch.arange(n, dtype=torch.float64) / n
    return max(above.max().item(), below.max().item())


N = 100_000
KS_CRITICAL = 1.95 / math.sqrt(N)  # the 0.1% critical value of the KS distance
CORR_LIMIT = 4.5 / math.sqrt(N)  # |Pearson r| of independent uniforms: sd 1/sqrt(N)


@pytest.mark.parametrize(
    "name, seeds, counters",
    [
        ("one stream, counters 0..N-1", [12345] * N, range(N)),
        ("seeds 0..N-1, draw 0 of each", range(N), [0] * N),
        ("seeds a golden-ratio step apart", [(k * 0x9E3779B97F4A7C15) % 2**64 for k in range(N)],
         [0] * N),
    ],
)  # fmt: skip
def test_uniforms_are_uniform_and_uncorrelated(name, seeds, counters):
    u = uniforms(list(seeds), list(counters)).double()  # (N,)
    assert u.min() >= 0 and u.max() < 1
    assert ks_statistic(u) < KS_CRITICAL, name
    counts = torch.histc(u, bins=100, min=0, max=1)
    chi2 = ((counts - N / 100) ** 2 / (N / 100)).sum().item()
    assert chi2 < 148.2, name  # the 0.1% critical value of chi-square with 99 degrees of freedom
    # Neighbours (consecutive counters, or adjacent seeds): no linear correlation.
    r = torch.corrcoef(torch.stack((u[:-1], u[1:])))[0, 1].item()
    assert abs(r) < CORR_LIMIT, name
    # Pairs of neighbours fill the unit square evenly (a 10 x 10 grid), as independent ones do.
    cells = (u[:-1] * 10).long() * 10 + (u[1:] * 10).long()
    grid = torch.bincount(cells, minlength=100).double()
    chi2_pairs = ((grid - (N - 1) / 100) ** 2 / ((N - 1) / 100)).sum().item()
    assert chi2_pairs < 148.2, name


def test_streams_of_different_seeds_are_different():
    """Every draw of a search gets its own seed (engine/torch_backend/context.py), so forks of
    one branch sample different continuations; their streams must not coincide or shift."""
    a = uniforms([5] * 1000, range(1000))
    b = uniforms([6] * 1000, range(1000))
    assert not torch.equal(a, b)
    assert not torch.equal(a[1:], b[:-1]) and not torch.equal(a[:-1], b[1:])
    assert abs(torch.corrcoef(torch.stack((a, b)))[0, 1].item()) < 0.15


def test_temperature_sharpens():
    logits = torch.tensor([1.0, 0.0]).expand(3000, 2).clone()
    cold = sample(logits, [RowParams(0.25, 0, 1.0, 0.0)] * 3000, range(3000), [0] * 3000)
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


native = pytest.mark.skipif(not cpu_kernels.available()[0], reason="no C kernels here")


def exact_picks(logits: torch.Tensor, seeds, counters) -> list[int]:
    """Inverse CDF in float64 (the float32 reference drifts over a 49k vocabulary)."""
    weights = (logits.double() - logits.double().amax(-1, keepdim=True)).exp().cumsum(-1)
    u = uniforms(seeds, counters).double()[:, None] * weights[:, -1:]
    return torch.searchsorted(weights, u, right=True).clamp(max=logits.shape[1] - 1)[:, 0].tolist()


@native
@pytest.mark.parametrize("vocab", [2, 7, 104, 256, 1000, 49152])
def test_native_plain_sampler_matches_the_exact_inverse_cdf(vocab):
    """The C sampler of plain rows (same SplitMix64 uniforms, inverse CDF summed in double)
    picks the exact inverse CDF's tokens, with the raw distribution's logprobs; extreme seeds
    and counters too. Small vocabularies also agree with the torch reference."""
    torch.manual_seed(vocab)
    rows = 64
    logits = torch.randn(rows, vocab) * 3
    plain = [RowParams(1.0, 0, 1.0, 0.0)] * rows
    seeds = [2**64 - 1 - i if i % 3 == 0 else 1000 + i for i in range(rows)]
    for k in (0, 1, 7, 2**40):
        counters = [k + i for i in range(rows)]
        got = sample(logits, plain, seeds, counters, native=True)
        assert got.token_ids == exact_picks(logits, seeds, counters)
        if vocab <= 1000:
            assert got.token_ids == sample_reference(logits, plain, seeds, counters)
        raw = torch.log_softmax(logits, -1)
        want_lp = raw.gather(1, torch.tensor(got.token_ids)[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(got.logprobs), want_lp, atol=1e-4, rtol=1e-5)


@native
def test_native_sampler_follows_the_distribution_and_falls_back():
    probs = torch.tensor([0.7, 0.2, 0.1, 0.0])
    logits = probs.log().expand(4000, 4).clone()  # a -inf logit is never drawn
    out = sample(logits, [RowParams(1.0, 0, 1.0, 0.0)] * 4000, [0] * 4000, range(4000), native=True)
    freq = torch.bincount(torch.tensor(out.token_ids), minlength=4).float() / 4000
    assert torch.allclose(freq, probs, atol=0.03)
    mixed = [RowParams(1.0, 0, 1.0, 0.0), RowParams(0.0, 0, 1.0, 0.0)]  # a greedy row: torch path
    got = sample(logits[:2], mixed, [1, 2], [0, 0], native=True, num_top=1)
    assert got.token_ids[1] == 0 and got.top_ids == [[0], [0]]
