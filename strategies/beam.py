"""Step-level beam search with a process verifier (Snell et al. 2024, section 5.2).

N beams (`request.n`), beam width M: sample N first steps, score each prefix with the PRM
(aggregated with `request.aggregation`), keep the top N/M unfinished beams, expand each M ways,
repeat until every beam finished, the step limit or the budget. Finished beams are collected as
they finish; the answer is the highest-scoring candidate (earliest on ties).
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


async def beam(ctx: SearchContext, request: SearchRequest, *, beam_width: int = 4) -> SearchResult:
    check_beam_width("beam", request.n, beam_width)
    root = ctx.root(request.prompt)
    live, scores = await expand(ctx, request, [root] * request.n)
    ctx.release([root])
    done, done_scores, trace = [], [], []
    for step in range(1, request.max_steps + 1):
        finished = [is_finished(b, step, request) for b in live]
        done += [b for b, f in zip(live, finished, strict=True) if f]
        done_scores += [s for s, f in zip(scores, finished, strict=True) if f]
        active = sorted((i for i, f in enumerate(finished) if not f), key=lambda i: -scores[i])
        keep = active[: request.n // beam_width]
        trace.append({"step": step, "scores": scores, "finished": sum(finished), "kept": keep})
        stop = not keep or request.budget.exhausted(ctx.stats)
        if stop:
            done += [live[i] for i in keep]
            done_scores += [scores[i] for i in keep]
            ctx.release(b for i, b in enumerate(live) if i not in keep and not finished[i])
            break
        parents = [live[i] for i in keep]
        ctx.release(b for i, b in enumerate(live) if i not in keep and not finished[i])
        live, scores = await expand(ctx, request, [p for p in parents for _ in range(beam_width)])
        ctx.release(parents)
    return finish_best(ctx, request, "beam", done, done_scores, trace)
