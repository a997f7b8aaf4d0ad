"""Particle Gibbs (Puri et al. 2025, Algorithm 2): repeated particle filtering around a
reference trajectory.

Iteration 1 is plain particle filtering with N particles. Each later iteration draws a
reference particle from the previous iteration's final particles (weights softmax(logit(r)/tau),
as in resampling) and runs particle filtering with N - 1 fresh particles plus the reference. At
step t the reference takes part with its own prefix and score at step t (its last ones once it
is shorter); it is never replaced, but resampling may copy it into free slots, where the copy
continues from the reference's step-t prefix. The budget is N x `iterations` particles; the
answer is the highest-scoring particle of the last iteration.

Prefixes are kept as branches while some particle's history (or the reference's) contains
them: they share KV with their descendants, so each pins at most one block of its own. After
every step the branches no history holds any more are released, so a search pins about
N x steps branches, not N x steps x iterations (at N = 32 the latter ran a 2 GB pool dry with
128 searches in flight).
"""

from __future__ import annotations

import random

from ponder.engine.protocol import Branch, SearchContext
from ponder.strategies.base import (
    SearchRequest,
    SearchResult,
    finish_best,
)
from ponder.strategies.particle import resampling_weights
from ponder.strategies.stepwise import expand, is_finished

History = list[tuple[Branch, float]]  # the particle's prefix and score after each step


class _Owned:
    """The branches a search holds."""

    def __init__(self) -> None:
        self.branches: list[Branch] = []

    def add(self, branches: list[Branch]) -> None:
        self.branches += branches

    def keep_only(self, ctx: SearchContext, histories: list[History]) -> None:
        live = {b.id for h in histories for b, _ in h}
        ctx.release(b for b in self.branches if b.id not in live)
        self.branches = [b for b in self.branches if b.id in live]


async def _filter(
    ctx: SearchContext,
    request: SearchRequest,
    root: Branch,
    fresh: int,
    reference: History | None,
    rng: random.Random,
    tau: float,
    owned: _Owned,
    trace: list[dict],
) -> list[History]:
    """One particle-filtering run; returns every particle's history (reference last)."""
    new, scores = await expand(ctx, request, [root] * fresh)
    owned.add(new)
    histories: list[History] = [[(b, s)] for b, s in zip(new, scores, strict=True)]
    owned.keep_only(ctx, histories + ([reference] if reference else []))
    step = 1
    while True:
        active = [h for h in histories if not is_finished(h[-1][0], len(h), request)]
        done = [h for h in histories if is_finished(h[-1][0], len(h), request)]
        trace.append({"step": step, "active": len(active), "reference": reference is not None})
        if not active or request.budget.exhausted(ctx.stats):
            break
        pool = active + ([reference[: min(step, len(reference))]] if reference else [])
        weights = resampling_weights([h[-1][1] for h in pool], tau)
        draws = rng.choices(range(len(pool)), weights=weights, k=len(active))
        parents = [pool[i] for i in draws]
        expandable = [h for h in parents if not h[-1][0].done]
        grown, grown_scores = await expand(ctx, request, [h[-1][0] for h in expandable])
        owned.add(grown)
        histories = done + [
            h + [(b, s)] for h, b, s in zip(expandable, grown, grown_scores, strict=True)
        ]
        histories += [h for h in parents if h[-1][0].done]
        owned.keep_only(ctx, histories + ([reference] if reference else []))
        step += 1
    return histories + ([reference] if reference else [])


async def particle_gibbs(
    ctx: SearchContext,
    request: SearchRequest,
    *,
    iterations: int = 2,
    tau: float = 1.0,
) -> SearchResult:
    if iterations < 1 or tau <= 0:
        raise ValueError(
            f"particle_gibbs: iterations ({iterations}) must be >= 1 and tau ({tau}) > 0"
        )
    if request.n < 2 and iterations > 1:
        raise ValueError("particle_gibbs needs n >= 2 to keep a reference beside fresh particles")
    rng = random.Random(request.seed)
    root = ctx.root(request.prompt)
    owned = _Owned()
    trace: list[dict] = []
    reference: History | None = None
    for iteration in range(iterations):
        fresh = request.n if reference is None else request.n - 1
        trace.append({"iteration": iteration})
        histories = await _filter(ctx, request, root, fresh, reference, rng, tau, owned, trace)
        finals = [h[-1][1] for h in histories]
        reference = histories[
            rng.choices(range(len(histories)), weights=resampling_weights(finals, tau))[0]
        ]
        if request.budget.exhausted(ctx.stats):
            break
    ends = [h[-1] for h in histories]
    ends_kept = {b.id for b, _ in ends}
    ctx.release([b for b in owned.branches if b.id not in ends_kept] + [root])
    return finish_best(
        ctx, request, "particle_gibbs", [b for b, _ in ends], [s for _, s in ends], trace
    )
