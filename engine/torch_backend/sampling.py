"""Next-token sampling as small pure functions over a batch of logits.

Each row of the batch has its own temperature, top-k, top-p, min-p and random generator, so a
sequence samples the same tokens whatever else shares its batch (per-request seeds are
reproducible under continuous batching). Logprobs are those of the model's raw distribution
(log-softmax of the unprocessed logits), as vLLM reports them by default. No state, no
scheduling, no stop rules here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class RowParams:
    temperature: float
    top_k: int
    top_p: float
    min_p: float


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
    generators: Sequence[torch.Generator | None],
    num_top: int = 0,
) -> SampleOutput:
    """One token per row of `logits` (B, V); temperature 0 rows are greedy.

    Inverse-CDF sampling: each row draws one uniform number from its own generator, so a row's
    token depends only on its logits, its parameters and its generator, never on the batch.
    The CDF is never materialised: per-chunk sums of the unnormalised probabilities locate the
    chunk, and only that chunk is summed entry by entry (`sample_reference` is the plain
    full-cumsum version; tests check they agree)."""
    logits = logits.float()
    batch = logits.shape[0]
    top, index = torch.max(logits, dim=-1)  # (B,) row maximum and the greedy token
    rows = [r for r, p in enumerate(params) if p.temperature > 0]
    lse = None  # (B,) logsumexp of the raw logits
    if rows:
        every = len(rows) == batch
        rows_t = None if every else torch.tensor(rows, device=logits.device)  # (S,)
        scaled = _filtered(logits if every else logits.index_select(0, rows_t), params, rows)
        u = _uniforms([generators[r] for r in rows], logits.device)  # (S,)
        picks, total = _inverse_cdf(scaled, u)  # (S,), (S,) mass relative to the row maximum
        index = picks if every else index.index_copy(0, rows_t, picks)
        if every and all(_is_plain(p) for p in params):  # weights were exp(logit - max)
            lse = total.log_().add_(top)
    if lse is None:  # logprobs of the raw distribution, without a (B, V) log-softmax
        lse = logits.sub(top[:, None]).exp_().sum(-1).log_().add_(top)
    chosen_lp = (logits.gather(1, index[:, None])[:, 0] - lse).tolist()
    top_ids: list[list[int]] = [[] for _ in params]
    top_lps: list[list[float]] = [[] for _ in params]
    if num_top > 0:
        values, ids = torch.topk(logits, num_top, dim=-1)  # (B, num_top)
        top_ids, top_lps = ids.tolist(), (values - lse[:, None]).tolist()
    return SampleOutput(index.tolist(), chosen_lp, top_ids, top_lps)


def _is_plain(p: RowParams) -> bool:
    return p.temperature == 1 and p.top_k <= 0 and p.top_p >= 1 and p.min_p <= 0


def _filtered(logits: torch.Tensor, params: Sequence[RowParams], rows: list[int]) -> torch.Tensor:
    """(S, V) logits of the sampled `rows` (already selected) divided by their temperature,
    with top-k/p and min-p applied per row; the input itself when nothing changes it."""
    picked = [params[r] for r in rows]
    if all(_is_plain(p) for p in picked):
        return logits
    temps = torch.tensor([p.temperature for p in picked], device=logits.device)
    scaled = logits / temps[:, None]  # (S, V)
    for i, p in enumerate(picked):  # only rows that filter pay for a per-row pass
        if p.top_k > 0 or p.top_p < 1 or p.min_p > 0:
            scaled[i] = filter_logits(scaled[i], p.top_k, p.top_p, p.min_p)
    return scaled


def _uniforms(generators: Sequence[torch.Generator | None], device) -> torch.Tensor:
    draws = [
        torch.rand((), generator=g, device=g.device) if g is not None else torch.rand(())
        for g in generators
    ]
    return torch.stack(draws).to(device)  # (S,)


def _inverse_cdf(scaled: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first index whose cumulative probability exceeds u (S,), for rows of logits (S, V),
    summing all V entries once and only one chunk of CHUNK entries in order; also each row's
    total of exp(logit - row max)."""
    rows, vocab = scaled.shape
    if vocab <= CHUNK:  # one chunk: scan the row directly (fewer ops for a small vocabulary)
        weights = torch.sub(scaled, scaled.amax(-1, keepdim=True)).exp_().cumsum_(-1)  # (S, V)
        target = u[:, None] * weights[:, -1:]  # (S, 1)
        pick = torch.searchsorted(weights, target, right=True).clamp_(max=vocab - 1)
        return pick[:, 0], weights[:, -1]
    chunks = -(-vocab // CHUNK)
    weights = scaled.new_zeros(rows, chunks * CHUNK)  # (S, C * CHUNK), zero tail padding
    torch.sub(scaled, scaled.amax(-1, keepdim=True), out=weights[:, :vocab]).exp_()
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
    generators: Sequence[torch.Generator | None],
) -> list[int]:
    """The plain version `sample` is checked against: softmax, a full cumulative sum and one
    search per row, over the same filtered logits and the same uniforms."""
    logits = logits.float()
    scaled = _filtered(logits, params, list(range(len(params))))
    cdf = torch.softmax(scaled, dim=-1).cumsum(dim=-1)  # (B, V)
    out = []
    for row, (p, g) in enumerate(zip(params, generators, strict=True)):
        if p.temperature == 0:
            out.append(int(logits[row].argmax()))
            continue
        u = _uniforms([g], logits.device) * cdf[row, -1]
        pick = torch.searchsorted(cdf[row], u[None], right=True)
        out.append(min(int(pick), logits.shape[-1] - 1))
    return out
