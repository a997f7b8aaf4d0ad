"""Next-token sampling as small pure functions over a batch of logits.

Each row of the batch has its own temperature, top-k, top-p, min-p and random stream, so a
sequence samples the same tokens whatever else shares its batch (per-request seeds are
reproducible under continuous batching). A stream is counter-based: the uniform behind a row's
k-th sampled token is a pure function of (seed, k) (`uniforms`), computed for the whole batch
at once, so no generator object is carried or advanced and a sequence that recomputes its KV
(preemption, eviction) samples exactly what it would have. Logprobs are those of the model's
raw distribution (log-softmax of the unprocessed logits), as vLLM reports them by default. No
state, no scheduling, no stop rules here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from ponder.engine.torch_backend import cpu_kernels


@dataclass(frozen=True, slots=True)
class RowParams:
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    # Temperature 1 and no filter: the row samples from the raw logits (derived, stored once
    # because `sample` asks it of every row at every step).
    plain: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        plain = self.temperature == 1 and self.top_k <= 0 and self.top_p >= 1 and self.min_p <= 0
        object.__setattr__(self, "plain", plain)


@dataclass(frozen=True, slots=True)
class SampleOutput:
    token_ids: list[int]
    logprobs: list[float]  # logprob of each chosen token under the raw model distribution
    top_ids: list[list[int]]  # top alternatives per row (empty lists when not requested)
    top_logprobs: list[list[float]]


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float, min_p: float) -> torch.Tensor:
    """Mask (set to -inf) what top-k, top-p and min-p exclude, for one row (V,)."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if min_p > 0:
        probs = torch.softmax(logits, dim=-1)
        logits = logits.masked_fill(probs < min_p * probs.max(), float("-inf"))
    if top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Drop a token when the mass before it already reaches top_p (the first always stays).
        drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


CHUNK = 256  # vocabulary entries per partial sum of the two-level inverse CDF


def sample(
    logits: torch.Tensor,
    params: Sequence[RowParams],
    seeds: Sequence[int],
    counters: Sequence[int],
    num_top: int = 0,
    native: bool = False,
) -> SampleOutput:
    """One token per row of `logits` (B, V); temperature 0 rows are greedy.

    Inverse-CDF sampling: row i uses the uniform `uniforms(seeds, counters)[i]` (its stream's
    draw number `counters[i]`), so a row's token depends only on its logits, its parameters,
    its seed and its counter, never on the batch.
    The CDF is never materialised: per-chunk sums of the unnormalised probabilities locate the
    chunk, and only that chunk is summed entry by entry (`sample_reference` is the plain
    full-cumsum version; tests check they agree). `native`: a batch of plain rows on the CPU
    samples in C (cpu_kernels.sample_plain: the same uniforms and inverse CDF, sequential float
    sums), when the kernels are loaded."""
    logits = logits.float()
    batch = logits.shape[0]
    # Plain rows (temperature 1, no filter) all sample, from the raw logits: no row selection,
    # no scaled copy, and the sampler's own total gives the logsumexp.
    plain = all(p.plain for p in params)
    if native and plain and num_top == 0 and logits.device.type == "cpu" and cpu_kernels.loaded():
        tokens, logprobs = cpu_kernels.sample_plain(logits, seeds, counters)
        return SampleOutput(tokens, logprobs, [[] for _ in params], [[] for _ in params])
    rows = None if plain else [r for r, p in enumerate(params) if p.temperature > 0]
    lse = None  # (B,) logsumexp of the raw logits
    if rows is None or len(rows) == batch:  # every row samples: no selection, no scatter back
        top = logits.amax(-1)  # (B,) row maximum
        scaled = logits if plain else _filtered(logits, params)
        u = uniforms(seeds, counters, logits.device)  # (B,)
        index, total = _inverse_cdf(scaled, u, top if plain else None)  # (B,), (B,)
        if plain:  # the weights were exp(logit - max): their total gives the logsumexp
            lse = total.log_().add_(top)
    else:
        top, index = torch.max(logits, dim=-1)  # (B,) row maximum and the greedy token
        if rows:
            rows_t = torch.tensor(rows, device=logits.device)  # (S,)
            picks, _ = _draw(
                logits.index_select(0, rows_t),
                [params[r] for r in rows],
                [seeds[r] for r in rows],
                [counters[r] for r in rows],
            )
            index = index.index_copy(0, rows_t, picks)
    if lse is None:  # logprobs of the raw distribution, without a (B, V) log-softmax
        lse = logits.sub(top[:, None]).exp_().sum(-1).log_().add_(top)
    chosen_lp = (logits.gather(1, index[:, None])[:, 0] - lse).tolist()
    top_ids: list[list[int]] = [[] for _ in params]
    top_lps: list[list[float]] = [[] for _ in params]
    if num_top > 0:
        values, ids = torch.topk(logits, num_top, dim=-1)  # (B, num_top)
        top_ids, top_lps = ids.tolist(), (values - lse[:, None]).tolist()
    return SampleOutput(index.tolist(), chosen_lp, top_ids, top_lps)


def _draw(
    logits: torch.Tensor,
    params: Sequence[RowParams],
    seeds: Sequence[int],
    counters: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(S,) tokens drawn from rows (S, V) that all sample, and each row's total of
    exp(scaled logit - row max)."""
    return _inverse_cdf(_filtered(logits, params), uniforms(seeds, counters, logits.device))


def _filtered(logits: torch.Tensor, params: Sequence[RowParams]) -> torch.Tensor:
    """(S, V) logits, row i divided by params[i]'s temperature, with its top-k/p and min-p
    applied; the input itself when nothing changes it (every row plain)."""
    if all(p.plain for p in params):
        return logits
    temps = torch.tensor([p.temperature for p in params], device=logits.device)
    scaled = logits / temps[:, None]  # (S, V)
    for i, p in enumerate(params):  # only rows that filter pay for a per-row pass
        if p.top_k > 0 or p.top_p < 1 or p.min_p > 0:
            scaled[i] = filter_logits(scaled[i], p.top_k, p.top_p, p.min_p)
    return scaled


# SplitMix64 (Steele, Lea and Flood 2014; Java's SplittableRandom): the golden-ratio increment
# and the two multipliers of its output mix (Stafford's variant 13).
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function, elementwise on uint64 (wrapping multiplication and
    logical shifts are numpy's unsigned semantics; torch has neither for uint64 on CPU)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX_1
    z = (z ^ (z >> np.uint64(27))) * _MIX_2
    return z ^ (z >> np.uint64(31))


def uniforms(
    seeds: Sequence[int], counters: Sequence[int], device: torch.device | str | None = None
) -> torch.Tensor:
    """(S,) float32 uniforms in [0, 1): entry i is draw number `counters[i]` of the stream
    `seeds[i]` (both in [0, 2**64)), a pure function of the pair.

    The stream of a seed is SplitMix64 started from the mixed seed: draw k is
    mix(mix(seed) + (k + 1) * golden). Mixing the seed first keeps streams of related seeds
    (0, 1, 2, ... or seeds a multiple of the increment apart) from being shifted copies of one
    another. The top 24 bits of the output make the float exactly (a float32 has 24)."""
    seed = np.array(seeds, dtype=np.uint64)  # (S,)
    count = np.array(counters, dtype=np.uint64)  # (S,)
    # Modulo 2**64 by design: numpy array arithmetic on uint64 wraps without a warning.
    bits = _mix64(_mix64(seed) + (count + np.uint64(1)) * _GOLDEN)  # (S,)
    u = (bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)  # (S,) exact
    return torch.from_numpy(u).to(device)


def _inverse_cdf(
    scaled: torch.Tensor, u: torch.Tensor, row_max: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first index whose cumulative probability exceeds u (S,), for rows of logits (S, V),
    summing all V entries once and only one chunk of CHUNK entries in order; also each row's
    total of exp(logit - row max). `row_max` (S,): the rows' maxima when already known."""
    rows, vocab = scaled.shape
    row_max = scaled.amax(-1) if row_max is None else row_max  # (S,)
    if vocab <= CHUNK:  # one chunk: scan the row directly (fewer ops for a small vocabulary)
        weights = torch.sub(scaled, row_max[:, None]).exp_().cumsum_(-1)  # (S, V)
        target = u[:, None] * weights[:, -1:]  # (S, 1)
        pick = torch.searchsorted(weights, target, right=True).clamp_(max=vocab - 1)
        return pick[:, 0], weights[:, -1]
    chunks = -(-vocab // CHUNK)
    weights = scaled.new_zeros(rows, chunks * CHUNK)  # (S, C * CHUNK), zero tail padding
    torch.sub(scaled, row_max[:, None], out=weights[:, :vocab]).exp_()
    weights = weights.view(rows, chunks, CHUNK)  # (S, C, CHUNK)
    partial = weights.sum(-1).cumsum_(-1)  # (S, C) mass up to the end of each chunk
    target = u[:, None] * partial[:, -1:]  # (S, 1) scaled to the row's total mass
    chunk = torch.searchsorted(partial, target, right=True).clamp_(max=chunks - 1)  # (S, 1)
    before = torch.where(chunk > 0, partial.gather(1, (chunk - 1).clamp_(min=0)), 0.0)  # (S, 1)
    inside = weights.gather(1, chunk[:, :, None].expand(rows, 1, CHUNK))[:, 0].cumsum_(-1)
    offset = torch.searchsorted(inside, target - before, right=True).clamp_(max=CHUNK - 1)
    return (chunk * CHUNK + offset)[:, 0].clamp_(max=vocab - 1), partial[:, -1]  # (S,), (S,)


def sample_reference(
    logits: torch.Tensor,
    params: Sequence[RowParams],
    seeds: Sequence[int],
    counters: Sequence[int],
) -> list[int]:
    """The plain version `sample` is checked against: softmax, a full cumulative sum and one
    search per row, over the same filtered logits and the same uniforms (one row at a time)."""
    logits = logits.float()
    scaled = _filtered(logits, params)
    cdf = torch.softmax(scaled, dim=-1).cumsum(dim=-1)  # (B, V)
    out = []
    for row, p in enumerate(params):
        if p.temperature == 0:
            out.append(int(logits[row].argmax()))
            continue
        u = uniforms([seeds[row]], [counters[row]], logits.device) * cdf[row, -1]
        pick = torch.searchsorted(cdf[row], u, right=True)
        out.append(min(int(pick), logits.shape[-1] - 1))
    return out
