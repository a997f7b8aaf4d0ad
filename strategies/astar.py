"""A*-decoding: best-first search over partial solutions scored by a process verifier.

States are partial solutions; expanding one samples k next steps from it. Every state gets
f = g + h from process scores (our documented default; the paper's exact g and h were not
retrievable, see ../shared/ref/ALGORITHMS.md section 5):
  g = mean step score of the path so far (how sound the path has been),
  h = the state's score under `request.aggregation` (by default "last", the score of the
      latest step: how promising the state is now).
Both come from one PRM call on the state's text; `weight_g` scales g (0 gives greedy
best-first search on h). The open list pops the highest f; ties go to the deeper state
(closer to a goal: with an exact PRM every sound state ties, and a breadth-first tie rule
would never finish), then to the first pushed.

A state may be expanded up to `revisit` times (ours; default 3): after an expansion it goes
back on the open list with its own f, so when every child it produced scores worse than it, the
next pop samples k fresh steps from it instead of continuing down a worse path (its children
win ties, being deeper). `revisit=1` is the plain skeleton, where a sound state whose k samples
all failed is lost. On 200 held-out arith problems at n=16 with the exact PRM, half the failures
of `revisit=1` were searches that spent all their expansions below an unsound step
(bench/strategies.py measures the rest). The root revisits too: it has no step that could be
unsound, so it goes back with the optimistic f = weight_g + 1 (the most a state can score, for
scores in [0, 1]); with ties going to the deeper state it is sampled again only when no open
state is as good, e.g. when every first step it produced was wrong. With a reward model whose
scores rarely reach 1 that means it is expanded `revisit` times at once, a wider first step.

The first finished state popped is the answer (the A* goal test). The search stops after
`max_expansions` expansions (default 4 * request.n, so up to 4n * k sampled steps) or when
the budget runs out; then the best finished state seen (open, or the best one pruned) is
returned, else the best open state, which with `complete=True` (default) is first sampled to
the end once (one more sample and verifier call, if the budget allows): with a noisy PRM
(10% flipped step scores, n=4) 41 of 100 searches ended without a finished state, and a partial
solution has no answer. The open list keeps at most `max_open` states (default
2 * request.n); the lowest-f ones are released, which bounds the KV memory a search pins.
"""

from __future__ import annotations

import heapq
import itertools

from ponder.engine.protocol import SearchContext
from ponder.strategies.base import (
    SearchRequest,
    SearchResult,
    candidates_of,
    finish,
)
from ponder.verifiers.aggregate import aggregate


def f_of(step_scores, weight_g: float, aggregation: str = "last") -> float:
    """f = weight_g * g + h: g the mean step score, h the state's score under the request's
    aggregation (the latest step's score by default); 0 for an unscored text."""
    if not step_scores:
        return 0.0
    return weight_g * aggregate(step_scores, "mean") + aggregate(step_scores, aggregation)


async def astar(
    ctx: SearchContext,
    request: SearchRequest,
    *,
    k: int = 4,
    weight_g: float = 1.0,
    max_expansions: int | None = None,
    max_open: int | None = None,
    revisit: int = 3,
    complete: bool = True,
) -> SearchResult:
    if k < 1:
        raise ValueError(f"astar: k must be >= 1, got {k}")
    if revisit < 1:
        raise ValueError(f"astar: revisit must be >= 1, got {revisit}")
    limit = 4 * request.n if max_expansions is None else max_expansions
    open_cap = 2 * request.n if max_open is None else max_open
    if limit < 1 or open_cap < 1:
        raise ValueError(f"astar: max_expansions ({limit}) and max_open ({open_cap}) must be >= 1")
    root = ctx.root(request.prompt)
    order = itertools.count()
    # (-f, -depth, tie, branch, depth, f, expansions of this state so far)
    heap: list = [(-0.0, 0, next(order), root, 0, 0.0, 0)]
    spare = None  # (f, branch): the best finished state pruned from the open list
    goal, trace, expansions = None, [], 0
    while heap and expansions < limit:
        neg_f, neg_depth, _, state, steps, f, visits = heapq.heappop(heap)
        if state.done or (steps >= request.max_steps and state is not root):
            goal = (f, state)
            break
        if request.budget.exhausted(ctx.stats):
            heapq.heappush(heap, (neg_f, neg_depth, next(order), state, steps, f, visits))
            break
        new = await ctx.extend(
            [state] * k, stop=[request.step_delimiter], max_tokens=request.max_step_tokens
        )
        raw = await ctx.score(new, request.verifier, request.reference)
        expansions += 1
        if visits + 1 < revisit:  # may be expanded again later
            again = weight_g + 1.0 if state is root else f
            heapq.heappush(heap, (-again, neg_depth, next(order), state, steps, again, visits + 1))
        elif state is not root:
            ctx.release([state])
        pushed = []
        for b, s in zip(new, raw, strict=True):
            fb = f_of(s, weight_g, request.aggregation)
            heapq.heappush(heap, (-fb, -(steps + 1), next(order), b, steps + 1, fb, 0))
            pushed.append(round(fb, 4))
        if len(heap) > open_cap:  # prune the open list: keep the best max_open states
            heap.sort()
            dropped = heap[open_cap:]
            heap = heap[:open_cap]
            heapq.heapify(heap)
            for entry in dropped:  # best first
                b, fb = entry[3], entry[5]
                if b.done and (spare is None or fb > spare[0]):
                    ctx.release([spare[1]] if spare else [])
                    spare = (fb, b)  # a finished state pruned: kept to fall back on
                elif b is not root:
                    ctx.release([b])
        trace.append(
            {
                "expansion": expansions,
                "depth": steps,
                "f": round(f, 4),
                "visit": visits + 1,
                "children_f": pushed,
            }
        )
    if goal is None:
        ranked = [(e[5], e[3], e[4]) for e in sorted(heap) if e[3] is not root]
        done = [x for x in ranked if x[1].done] + ([spare + (0,)] if spare else [])
        best = max(done or ranked, key=lambda x: x[0], default=None)
        goal = best[:2] if best else None
        if best and not done and complete and not request.budget.exhausted(ctx.stats):
            # no finished state: sample the best open one to the end (one sample), so the
            # answer is a whole solution rather than a partial one
            left = max(1, request.max_steps - best[2]) * request.max_step_tokens
            rollout = await ctx.extend([best[1]], stop=[], max_tokens=left)
            end_scores = (await ctx.score(rollout, request.verifier, request.reference))[0]
            f_end = f_of(end_scores, weight_g, request.aggregation)
            goal = (f_end, rollout[0])
            trace.append({"rollout": best[2], "f": round(best[0], 4), "f_end": round(f_end, 4)})
    keep = [goal[1]] if goal else []
    leftover = [e[3] for e in heap] + ([spare[1]] if spare else [])  # incl. a rolled-out parent
    ctx.release(b for b in leftover if b is not root and (not keep or b is not keep[0]))
    cands = candidates_of(ctx, request, keep, [(goal[0], ())] if goal else None)
    ctx.release(keep + [root])
    answer = cands[0].answer if cands else None
    return finish(ctx, "astar", answer, [answer], cands, trace)
