"""Diverse verifier tree search (HF search-and-learn's DVTS).

The width n is split into n / M independent subtrees (M = beam_width). Each round every live
subtree samples M next steps from its current prefix, scores them with the PRM and greedily
keeps the best; a subtree ends when its chosen step finishes. The candidates are the M final
options of every subtree (n in all); the answer is the highest-scoring one.
"""

from __future__ import annotations

from ponder.engine.protocol import SearchContext
from ponder.strategies.base import (
    SearchRequest,
    SearchResult,
    check_beam_width,
    finish_best,
)
from ponder.strategies.stepwise import expand, is_finished


async def dvts(ctx: SearchContext, request: SearchRequest, *, beam_width: int = 4) -> SearchResult:
    check_beam_width("dvts", request.n, beam_width)
    m = beam_width
    root = ctx.root(request.prompt)
    prefixes = [root] * (request.n // m)
    final_branches, final_scores, trace = [], [], []
    for step in range(1, request.max_steps + 1):
        options, scores = await expand(ctx, request, [p for p in prefixes for _ in range(m)])
        ctx.release(prefixes)
        next_prefixes = []
        for t in range(len(prefixes)):
            group = options[t * m : (t + 1) * m]
            group_scores = scores[t * m : (t + 1) * m]
            best = max(range(m), key=lambda i: group_scores[i])
            chosen = group[best]
            if is_finished(chosen, step, request) or request.budget.exhausted(ctx.stats):
                final_branches += group
                final_scores += group_scores
            else:
                next_prefixes.append(chosen)
                ctx.release(b for i, b in enumerate(group) if i != best)
        trace.append({"step": step, "live_subtrees": len(next_prefixes), "scores": scores})
        prefixes = next_prefixes
        if not prefixes:
            break
    else:
        final_branches += prefixes  # step limit with subtrees still live
        final_scores += [0.0] * len(prefixes)
    return finish_best(ctx, request, "dvts", final_branches, final_scores, trace)
