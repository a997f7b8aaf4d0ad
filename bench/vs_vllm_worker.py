"""One column of bench/vs_vllm.py in one clean process; prints `RESULT {json}`.

    python bench/vs_vllm_worker.py --column ponder --model DIR --workloads FILE
    /work/vllm-venv/bin/python bench/vs_vllm_worker.py --column ponder-vllm ...   # (b)
    /work/vllm-venv/bin/python bench/vs_vllm_worker.py --column vllm ...          # (c)

Columns (a) `ponder` (ponder's engine) and (b) `ponder-vllm` (ponder's VLLMBackend) run the
same code through ponder's API (`agenerate`, `search` contexts, `strategies.run`); (c) `vllm`
drives `vllm.LLM` the way peers do: one `generate` per round over every live branch, token-id
prompts re-submitted with prefix caching on (bench/peer_search.py). Every row reports wall
seconds, generated tokens, prompt tokens computed (all submissions; what the cache missed) and,
for the particle filter, accuracy; plus this process's CPU seconds (the driver side: vLLM's
engine core runs in a process of its own). Same pattern as bench/engine_worker.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time


def _bon_params(w: dict):
    from ponder.engine import SamplingParams

    n, tokens = w["n"], w["max_tokens"]
    return SamplingParams(n=n, temperature=1.0, max_tokens=tokens, seed=w["seed"], ignore_eos=True)


def _stats_row(stats: list[dict]) -> dict:
    def total(key: str) -> int:
        return sum(s.get(key, 0) for s in stats)

    return {
        "generated": total("generated_tokens"),
        "prompt_computed": total("computed_prompt_tokens") + total("recomputed_tokens"),
    }


async def stepwise(backend, w: dict) -> dict:
    """16 branches, one line each round; the best 4 by cumulative logprob fork 4 ways."""
    from ponder.engine import SamplingParams

    width = w["width"]
    params = SamplingParams(temperature=1.0, max_tokens=w["max_tokens"])
    async with backend.search(params, seed=w["seed"]) as ctx:
        root = ctx.root(w["prompt"])
        live = [root] * width
        for _ in range(w["rounds"]):
            steps = await ctx.extend(live, stop=["\n"])
            ctx.release(b for b in live if b is not root)
            best = sorted(steps, key=lambda b: -b.cumulative_logprob)[: width // 4]
            best = [b for b in best if not b.done] or best[:1]
            if all(b.done for b in best):
                break
            live = [k for b in best for k in ctx.fork(b, width // len(best))]
            ctx.release(steps)
        return _stats_row([ctx.stats.as_dict()])


async def particle(backend, w: dict) -> dict:
    from ponder.strategies import SearchRequest, problem_seed, run
    from ponder.tasks.registry import get_task, make_verifier

    task = get_task("arith", level=w["level"])
    items = task.items(w["problems"], seed=w["seed"])
    verifier = make_verifier("arith_step")
    requests = [
        SearchRequest(
            prompt=item.prompt,
            verifier=verifier,
            n=w["n"],
            seed=problem_seed(w["seed"], i),
            step_delimiter=task.step_delimiter,
            max_steps=task.max_steps,
            max_step_tokens=task.max_step_tokens,
            extract_answer=task.extract_answer,
        )  # fmt: skip
        for i, item in enumerate(items)
    ]
    results = await asyncio.gather(*(run(backend, "particle", r, tau=w["tau"]) for r in requests))
    row = _stats_row([r.stats for r in results])
    correct = sum(task.is_correct(it, r.answer) for it, r in zip(items, results, strict=True))
    return {**row, "accuracy": correct / len(items)}


async def concurrent(backend, w: dict) -> dict:
    from ponder.engine import SamplingParams

    params = [
        SamplingParams(
            temperature=1.0, max_tokens=w["max_tokens"], seed=w["seed"] + i, ignore_eos=True
        )  # fmt: skip
        for i in range(w["requests"])
    ]
    outs = await asyncio.gather(
        *(backend.agenerate(p, q) for p, q in zip(w["prompts"], params, strict=True))
    )
    return _stats_row([o.metrics for o in outs])


async def bon(backend, w: dict) -> dict:
    out = await backend.agenerate(w["prompt"], _bon_params(w))
    return _stats_row([out.metrics])


PONDER_JOBS = {"bon": bon, "stepwise": stepwise, "particle": particle, "concurrent": concurrent}


def ponder_column(model: str, which: str):
    """(a) ponder's engine or (b) ponder's VLLMBackend: the same jobs, through ponder's API."""
    if which == "ponder":
        from ponder.engine import Engine

        backend = Engine.from_pretrained(model, num_blocks=8192)

        def reset():
            backend.reset_prefix_cache()
    else:
        from ponder.engine.vllm_backend import VLLMBackend

        backend = VLLMBackend(model)

        def reset():
            coroutine = backend.engine.reset_prefix_cache()
            asyncio.run_coroutine_threadsafe(coroutine, backend._loop).result()

    def job(w: dict) -> dict:
        reset()  # no row starts with its prompt cached by an earlier one
        return asyncio.run(PONDER_JOBS[w["kind"]](backend, w))

    return job, backend.close


def vllm_column(model: str, which: str):
    from peer_search import PeerVLLM

    peer = PeerVLLM(model)
    return peer.run, lambda: None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--column", choices=("ponder", "ponder-vllm", "vllm"), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--workloads", required=True)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    with open(args.workloads) as f:
        workloads = json.load(f)
    start = time.perf_counter()
    make = vllm_column if args.column == "vllm" else ponder_column
    job, close = make(args.model, args.column)
    load_s = time.perf_counter() - start
    job(dict(workloads[0], n=2, max_tokens=4))  # warm-up (allocations, first forward)
    results = []
    for w in workloads:
        runs = []
        for _ in range(args.repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            row = job(w)
            row["seconds"] = time.perf_counter() - wall
            row["driver_cpu_s"] = time.process_time() - cpu
            runs.append(row)
        results.append({"name": w["name"], "runs": runs})
    close()
    info = {"column": args.column, "pid": os.getpid(), "load_s": round(load_s, 1)}
    print("RESULT " + json.dumps({**info, "results": results}))


if __name__ == "__main__":
    main()
