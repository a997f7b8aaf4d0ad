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


def sample(
    logits: torch.Tensor,
    params: Sequence[RowParams],
    generators: Sequence[torch.Generator | None],
    num_top: int = 0,
) -> SampleOutput:
    """One token per row of `logits` (B, V); temperature 0 rows are greedy.

    Inverse-CDF sampling: each row draws one uniform number from its own generator, so a row's
    token depends only on its logits, its parameters and its generator, never on the batch."""
    logits = logits.float()
    raw_logprobs = torch.log_softmax(logits, dim=-1)  # (B, V)
    temps = torch.tensor([p.temperature for p in params], device=logits.device)  # (B,)
    greedy = temps == 0
    scaled = logits / torch.where(greedy, 1.0, temps)[:, None]  # (B, V)
    for row, p in enumerate(params):  # only rows that filter pay for a per-row pass
        if p.temperature > 0 and (p.top_k > 0 or p.top_p < 1 or p.min_p > 0):
            scaled[row] = filter_logits(scaled[row], p.top_k, p.top_p, p.min_p)
    cdf = torch.softmax(scaled, dim=-1).cumsum(dim=-1)  # (B, V)
    draws = [
        torch.rand((), generator=g, device=g.device)
        if g is not None
        else torch.rand((), device=logits.device)
        for g in generators
    ]
    u = torch.stack(draws)[:, None] * cdf[:, -1:]  # (B, 1), scaled to the row's total mass
    sampled = torch.searchsorted(cdf, u, right=True)[:, 0].clamp_(max=logits.shape[-1] - 1)
    index = torch.where(greedy, logits.argmax(dim=-1), sampled)  # (B,)
    chosen_lp = raw_logprobs.gather(1, index[:, None])[:, 0].tolist()
    top_ids: list[list[int]] = [[] for _ in params]
    top_lps: list[list[float]] = [[] for _ in params]
    if num_top > 0:
        values, ids = torch.topk(raw_logprobs, num_top, dim=-1)  # (B, num_top)
        top_ids, top_lps = ids.tolist(), values.tolist()
    return SampleOutput(index.tolist(), chosen_lp, top_ids, top_lps)
