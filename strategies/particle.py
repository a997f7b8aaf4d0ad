"""Particle filtering (Puri et al. 2025) over reasoning steps.

N particles (`request.n`) each take one step; the PRM score r of each partial trajectory
(aggregated with `request.aggregation`; "model" if the verifier scores a whole prefix as one
step) gives the resampling weight softmax(logit(r) / tau), i.e. weights proportional to the
odds (r / (1 - r))^(1 / tau), r clipped to [eps, 1 - eps]. Active particles are resampled
multinomially with replacement (a copy is an extend of the same branch: it shares the KV) and
take the next step; finished particles are carried unchanged and not resampled (the official
CLI default; `resample_finished=True` keeps them in the pool, and a finished particle drawn
again stays as it is). The answer is the particle with the highest final score.
Its random choices are seeded by the request's seed.
"""

from __future__ import annotations

import math
import random

from ponder.engine.protocol import SearchContext
from ponder.strategies.base import (
    SearchRequest,
    SearchResult,
    finish_best,
)
from ponder.strategies.stepwise import expand, is_finished


def resampling_weights(scores, tau: float, eps: float = 1e-4) -> list[float]:
    """softmax(logit(r) / tau): weights proportional to the odds (r/(1-r))**(1/tau)."""
    logits = [
        math.log(min(max(r, eps), 1 - eps) / (1 - min(max(r, eps), 1 - eps))) / tau for r in scores
    ]
    top = max(logits)
    exp = [math.exp(x - top) for x in logits]
    total = sum(exp)
    return [e / total for e in exp]


async def particle(
    ctx: SearchContext,
    request: SearchRequest,
    *,
    tau: float = 1.0,
    resample_finished: bool = False,
) -> SearchResult:
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    rng = random.Random(request.seed)
    root = ctx.root(request.prompt)
    particles, scores = await expand(ctx, request, [root] * request.n)
    ctx.release([root])
    steps = [1] * len(particles)
    trace = []
    while True:
        finished = [is_finished(p, s, request) for p, s in zip(particles, steps, strict=True)]
        pool = [i for i, f in enumerate(finished) if resample_finished or not f]
        active_count = sum(not f for f in finished)
        trace.append({"step": max(steps), "scores": list(scores), "finished": sum(finished)})
        if active_count == 0 or request.budget.exhausted(ctx.stats):
            break
        weights = resampling_weights([scores[i] for i in pool], tau)
        draws = rng.choices(pool, weights=weights, k=active_count)
        trace[-1]["resampled"] = draws
        kept = [i for i, f in enumerate(finished) if f]
        to_expand = [i for i in draws if not finished[i]]
        carried = [i for i in draws if finished[i]]  # a finished particle drawn again
        new, new_scores = await expand(ctx, request, [particles[i] for i in to_expand])
        survivors = set(kept) | set(carried)
        ctx.release(p for i, p in enumerate(particles) if i not in survivors)
        particles = [particles[i] for i in kept] + [particles[i] for i in carried] + new
        scores = [scores[i] for i in kept] + [scores[i] for i in carried] + new_scores
        steps = (
            [steps[i] for i in kept]
            + [steps[i] for i in carried]
            + [steps[i] + 1 for i in to_expand]
        )
    return finish_best(ctx, request, "particle", particles, scores, trace)
