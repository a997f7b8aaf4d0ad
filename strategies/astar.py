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
from dataclasses import dataclass, replace

from ponder.engine.protocol import Branch, SearchContext
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


@dataclass(frozen=True, slots=True)
class State:
    branch: Branch
    depth: int  # steps taken from the root
    f: float
    visits: int = 0  # expansions of this state so far


class OpenList:
    """The open states, highest f first; ties: the deeper state, then the first pushed."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, State]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, state: State) -> None:
        heapq.heappush(self._heap, (-state.f, -state.depth, next(self._order), state))

    def pop(self) -> State:
        return heapq.heappop(self._heap)[-1]

    def best_first(self) -> list[State]:
        return [entry[-1] for entry in sorted(self._heap)]

    def prune(self, cap: int) -> list[State]:
        """Keep the best `cap` states; return the dropped ones, best first."""
        self._heap.sort()
        dropped = [entry[-1] for entry in self._heap[cap:]]
        del self._heap[cap:]
        heapq.heapify(self._heap)
        return dropped


@dataclass
class Search:
    """One A* search's settings and mutable state."""

    ctx: SearchContext
    request: SearchRequest
    k: int
    weight_g: float
    revisit: int
    open_cap: int
    root: Branch
    open: OpenList
    spare: State | None = None  # the best finished state pruned from the open list

    def release(self, branches) -> None:
        self.ctx.release(b for b in branches if b is not self.root)

    async def expand(self, state: State) -> list[State]:
        """Sample k next steps from `state`, push them and (if it may revisit) it again."""
        request = self.request
        new = await self.ctx.extend(
            [state.branch] * self.k,
            stop=[request.step_delimiter],
            max_tokens=request.max_step_tokens,
        )
        raw = await self.ctx.score(new, request.verifier, request.reference)
        if state.visits + 1 < self.revisit:  # may be expanded again later
            again = self.weight_g + 1.0 if state.branch is self.root else state.f
            self.open.push(replace(state, f=again, visits=state.visits + 1))
        else:
            self.release([state.branch])
        children = [
            State(b, state.depth + 1, f_of(s, self.weight_g, request.aggregation))
            for b, s in zip(new, raw, strict=True)
        ]
        for child in children:
            self.open.push(child)
        if len(self.open) > self.open_cap:
            self.prune()
        return children

    def prune(self) -> None:
        """Keep the best open_cap states; a finished one dropped is kept aside to fall back on."""
        for state in self.open.prune(self.open_cap):  # best first
            if state.branch.done and (self.spare is None or state.f > self.spare.f):
                if self.spare is not None:
                    self.release([self.spare.branch])
                self.spare = state
            else:
                self.release([state.branch])

    async def fallback(self, complete: bool, trace: list[dict]) -> State | None:
        """No goal popped: the best finished state seen, else the best open one, which with
        `complete` is first sampled to the end once (a partial solution has no answer)."""
        ranked = [s for s in self.open.best_first() if s.branch is not self.root]
        done = [s for s in ranked if s.branch.done] + ([self.spare] if self.spare else [])
        best = max(done or ranked, key=lambda s: s.f, default=None)
        request = self.request
        if best is None or done or not complete or request.budget.exhausted(self.ctx.stats):
            return best
        left = max(1, request.max_steps - best.depth) * request.max_step_tokens
        rollout = await self.ctx.extend([best.branch], stop=[], max_tokens=left)
        end_scores = (await self.ctx.score(rollout, request.verifier, request.reference))[0]
        f_end = f_of(end_scores, self.weight_g, request.aggregation)
        trace.append({"rollout": best.depth, "f": round(best.f, 4), "f_end": round(f_end, 4)})
        return State(rollout[0], best.depth, f_end)


def check_options(n: int, k: int, revisit: int, max_expansions, max_open) -> tuple[int, int]:
    """(expansion limit, open-list cap) for these options; ValueError naming a bad one."""
    if k < 1:
        raise ValueError(f"astar: k must be >= 1, got {k}")
    if revisit < 1:
        raise ValueError(f"astar: revisit must be >= 1, got {revisit}")
    limit = 4 * n if max_expansions is None else max_expansions
    open_cap = 2 * n if max_open is None else max_open
    if limit < 1 or open_cap < 1:
        raise ValueError(f"astar: max_expansions ({limit}) and max_open ({open_cap}) must be >= 1")
    return limit, open_cap


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
    limit, open_cap = check_options(request.n, k, revisit, max_expansions, max_open)
    root = ctx.root(request.prompt)
    search = Search(ctx, request, k, weight_g, revisit, open_cap, root, OpenList())
    search.open.push(State(root, 0, 0.0))
    goal, trace, expansions = None, [], 0
    while search.open and expansions < limit:
        state = search.open.pop()
        if state.branch.done or (state.depth >= request.max_steps and state.branch is not root):
            goal = state
            break
        if request.budget.exhausted(ctx.stats):
            search.open.push(state)
            break
        children = await search.expand(state)
        expansions += 1
        trace.append(
            {
                "expansion": expansions,
                "depth": state.depth,
                "f": round(state.f, 4),
                "visit": state.visits + 1,
                "children_f": [round(c.f, 4) for c in children],
            }
        )
    if goal is None:
        goal = await search.fallback(complete, trace)
    keep = goal.branch if goal else None
    leftover = [s.branch for s in search.open.best_first()]
    leftover += [search.spare.branch] if search.spare else []  # incl. a rolled-out parent
    search.release(b for b in leftover if b is not keep)
    cands = candidates_of(ctx, request, [keep] if keep else [], [(goal.f, ())] if goal else None)
    ctx.release(([keep] if keep else []) + [root])
    answer = cands[0].answer if cands else None
    return finish(ctx, "astar", answer, [answer], cands, trace)
