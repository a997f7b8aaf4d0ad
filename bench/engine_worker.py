"""One engine, one clean process: run the throughput workloads and print one JSON line.

    python bench/engine_worker.py --engine ponder --model DIR --workloads FILE --repeats 3
    /work/vllm-venv/bin/python bench/engine_worker.py --engine vllm ...

Started by bench/engine_throughput.py, once per engine per round, so no engine shares a process
(and its allocator settings or thread pools) with another. It runs in ponder's venv (ponder, hf)
or in vLLM's own venv (vllm), so it imports neither at module level. Workloads (a JSON list):

- {"kind": "bon", "name", "prompt", "n", "max_tokens", "seed"}: n samples of one prompt at
  temperature 1 with EOS ignored, so every engine generates exactly n * max_tokens tokens;
  reports generated tokens per second.
- {"kind": "stepwise", "name", "prompt", "width", "rounds", "max_tokens", "seed"}: `width`
  branches extend by one line (stop "\\n") per round; the width // 4 best by cumulative logprob
  each fork width // 4 times; reports wall seconds and generated tokens (sampled lines differ
  per engine, so the search's size does too: compare tokens per second).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def ponder_runner(model: str, block_size: int):
    import asyncio

    from ponder.engine import Engine, SamplingParams

    engine = Engine.from_pretrained(model, block_size=block_size, num_blocks=8192)

    def bon(w: dict) -> int:
        params = SamplingParams(
            n=w["n"], temperature=1.0, max_tokens=w["max_tokens"], seed=w["seed"], ignore_eos=True
        )
        engine.reset_prefix_cache()  # no run starts with the prompt cached by an earlier one
        out = engine.generate(w["prompt"], params)[0]
        return sum(len(c.token_ids) for c in out.outputs)

    async def search(w: dict) -> int:
        width, made = w["width"], 0
        params = SamplingParams(temperature=1.0, max_tokens=w["max_tokens"])
        async with engine.search(params, seed=w["seed"]) as ctx:
            root = ctx.root(w["prompt"])
            live = [root] * width
            for _ in range(w["rounds"]):
                steps = await ctx.extend(live, stop=["\n"])
                made += sum(b.length for b in steps) - sum(b.length for b in live)
                ctx.release(b for b in live if b is not root)
                survivors = sorted(steps, key=lambda b: -b.cumulative_logprob)[: width // 4]
                survivors = [b for b in survivors if not b.done] or survivors[:1]
                live = [k for b in survivors for k in ctx.fork(b, width // len(survivors))]
                ctx.release(steps)
                if all(b.done for b in live):
                    break
        return made

    def stepwise(w: dict) -> int:
        engine.reset_prefix_cache()
        return asyncio.run(search(w))

    return {"bon": bon, "stepwise": stepwise}, engine.close


def vllm_runner(model: str, block_size: int):
    from vllm import LLM, SamplingParams

    llm = LLM(
        model=model,
        dtype="float32",
        gpu_memory_utilization=0.2,
        enforce_eager=True,
        enable_prefix_caching=True,
        block_size=block_size,
        seed=0,
    )

    def bon(w: dict) -> int:
        params = SamplingParams(
            n=w["n"], temperature=1.0, max_tokens=w["max_tokens"], seed=w["seed"], ignore_eos=True
        )
        llm.reset_prefix_cache()
        out = llm.generate([w["prompt"]], params, use_tqdm=False)[0]
        return sum(len(c.token_ids) for c in out.outputs)

    def stepwise(w: dict) -> int:
        llm.reset_prefix_cache()
        tok = llm.get_tokenizer()
        width, made = w["width"], 0
        # live: (token ids, cumulative logprob, done) per branch, grouped by parent
        parents = [(tok(w["prompt"]).input_ids, 0.0)]
        per_parent = width
        for r in range(w["rounds"]):
            params = SamplingParams(
                n=per_parent, temperature=1.0, max_tokens=w["max_tokens"], stop=["\n"],
                seed=w["seed"] + r, logprobs=0, include_stop_str_in_output=True,
            )  # fmt: skip
            prompts = [{"prompt_token_ids": ids} for ids, _ in parents]
            outs = llm.generate(prompts, params, use_tqdm=False)
            steps = []
            for (ids, lp), out in zip(parents, outs, strict=True):
                for c in out.outputs:
                    made += len(c.token_ids)
                    done = c.finish_reason == "stop" and c.stop_reason is None
                    steps.append((ids + list(c.token_ids), lp + c.cumulative_logprob, done))
            best = sorted(steps, key=lambda s: -s[1])[: width // 4]
            best = [s for s in best if not s[2]] or best[:1]
            if all(s[2] for s in best):
                break
            parents = [(ids, lp) for ids, lp, _ in best]
            per_parent = width // len(parents)
        return made

    return {"bon": bon, "stepwise": stepwise}, lambda: None


def hf_runner(model: str, block_size: int):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()

    @torch.inference_mode()
    def bon(w: dict) -> int:
        ids = tok(w["prompt"], return_tensors="pt").input_ids
        torch.manual_seed(w["seed"])
        out = lm.generate(
            ids,
            do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
            num_return_sequences=w["n"], max_new_tokens=w["max_tokens"],
            min_new_tokens=w["max_tokens"], pad_token_id=tok.pad_token_id or 0,
        )  # fmt: skip
        return (out.shape[1] - ids.shape[1]) * w["n"]

    return {"bon": bon}, lambda: None


RUNNERS = {"ponder": ponder_runner, "vllm": vllm_runner, "hf": hf_runner}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=sorted(RUNNERS), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--workloads", required=True, help="JSON file: a list of workloads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    with open(args.workloads) as f:
        workloads = json.load(f)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    jobs, close = RUNNERS[args.engine](args.model, args.block_size)
    load_s = time.perf_counter() - start
    results = []
    for w in workloads:
        if w["kind"] not in jobs:
            continue
        warm = dict(w, max_tokens=4, n=2, rounds=1) if w["kind"] == "bon" else dict(w, rounds=1)
        jobs[w["kind"]](warm)
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            tokens = jobs[w["kind"]](w)
            seconds = time.perf_counter() - t0
            runs.append({"tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds})
        results.append(
            {
                "name": w["name"],
                "runs": runs,
                "median_s": statistics.median(r["seconds"] for r in runs),
                "median_tok_s": statistics.median(r["tok_s"] for r in runs),
            }
        )
    close()
    info = {"engine": args.engine, "pid": os.getpid(), "load_s": round(load_s, 1)}
    print("RESULT " + json.dumps({**info, "block_size": args.block_size, "results": results}))


if __name__ == "__main__":
    main()
