"""KV sharing checks on the embedded model: fork memory, step-wise prompt recompute, batching.

    python bench/engine_sharing.py              # all three parts, seeded
    python bench/engine_sharing.py --quick      # smaller sizes, for a smoke run
    python bench/engine_sharing.py --quick --memory-only --block-size 32 --prompt-tokens 257

Throughput against vLLM and HF lives in bench/engine_throughput.py (each engine in its own
process). Prints a table and a final JSON line; writes bench/results/engine_sharing.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from pathlib import Path

import torch
from ponder.engine import Engine, SamplingParams
from ponder.tasks.arith import generate

RESULTS = Path(__file__).resolve().parent / "results"


def fork_memory(engine: Engine, prompt_ids: list[int], forks: int, new_tokens: int) -> dict:
    bs = engine.blocks.block_size

    async def run() -> tuple[int, int]:
        params = SamplingParams(temperature=1.0, max_tokens=new_tokens, ignore_eos=True)
        async with engine.search(params, seed=0) as ctx:
            root = ctx.root(prompt_ids)
            kids = await ctx.extend([root] * forks)
            used = engine.kv_stats.used
            generated = [k.length - len(prompt_ids) for k in kids]
            # Blocks a fork needs on its own: the KV of its g - 1 generated tokens (the last
            # sampled one has none yet) and, when the prompt ends inside a block, that block
            # (its tail differs per fork, so each fork holds a copy).
            tail = len(prompt_ids) % bs
            own = sum(math.ceil((tail + g - 1) / bs) for g in generated)
            return used, own

    used, own = asyncio.run(run())
    prompt_blocks = len(prompt_ids) // bs  # the full prompt blocks, shared by every fork
    return {
        "forks": forks,
        "prompt_tokens": len(prompt_ids),
        "block_size": bs,
        "blocks_used": used,
        "prompt_blocks": prompt_blocks,
        "generated_blocks": own,
        "ratio": round(used / (prompt_blocks + own), 3),
        "target": 1.1,
    }


def stepwise(engine: Engine, prompt: str, width: int, rounds: int) -> dict:
    async def run() -> dict:
        params = SamplingParams(temperature=1.0, max_tokens=64)
        async with engine.search(params, seed=1) as ctx:
            root = ctx.root(prompt)
            live = [root] * width
            after_first = None
            for _ in range(rounds):
                steps = await ctx.extend(live, stop=["\n"])
                if after_first is None:
                    after_first = ctx.stats.computed_prompt_tokens
                ctx.release(b for b in live if b is not root)
                survivors = sorted(steps, key=lambda b: -b.cumulative_logprob)[: width // 4]
                survivors = [b for b in survivors if not b.done] or survivors[:1]
                live = [k for b in survivors for k in ctx.fork(b, width // len(survivors))]
                ctx.release(steps)
                if all(b.done for b in live):
                    break
            stats = ctx.stats
        return {
            "width": width,
            "rounds": rounds,
            "prompt_tokens": stats.prompt_tokens,
            "computed_prompt_tokens": stats.computed_prompt_tokens,
            "recomputed_tokens": stats.recomputed_tokens,
            "prompt_recomputed_after_first_prefill": stats.computed_prompt_tokens
            - after_first
            + stats.recomputed_tokens,
            "generated_tokens": stats.generated_tokens,
            "target": 0,
        }

    return asyncio.run(run())


def concurrent_vs_serial(engine: Engine, prompts: list[str], seed: int) -> dict:
    params = SamplingParams(temperature=1.0, max_tokens=200, seed=seed)
    start = time.perf_counter()
    together = engine.generate(prompts, params)
    batch_s = time.perf_counter() - start
    start = time.perf_counter()
    alone = [engine.generate(p, params)[0] for p in prompts]
    serial_s = time.perf_counter() - start
    tok_b = sum(len(o.outputs[0].token_ids) for o in together)
    tok_s = sum(len(o.outputs[0].token_ids) for o in alone)
    return {
        "prompts": len(prompts),
        "batched_tok_s": round(tok_b / batch_s),
        "serial_tok_s": round(tok_s / serial_s),
        "ratio": round((tok_b / batch_s) / (tok_s / serial_s), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--prompt-tokens", type=int, default=256, help="fork-memory prompt")
    parser.add_argument("--memory-only", action="store_true", help="only the fork-memory part")
    parser.add_argument("--out", default=str(RESULTS / "engine_sharing.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    engine = Engine.from_pretrained(None, block_size=args.block_size, num_blocks=4096)
    problems = generate(64, split="heldout", seed=args.seed, difficulty=4)
    prompt = problems[0].prompt

    long_ids = list(engine.encode("".join(p.prompt for p in problems)))[: args.prompt_tokens]
    memory = fork_memory(engine, long_ids, 16 if args.quick else 64, 32)
    if args.memory_only:
        engine.close()
        print(json.dumps({"bench": "engine_sharing", "memory": memory}))
        return
    steps = stepwise(engine, prompt, 16, 10)
    concurrency = concurrent_vs_serial(
        engine, [p.prompt for p in problems[: 16 if args.quick else 64]], args.seed
    )
    leaked = engine.kv_stats.used
    engine_threads = engine.loop.threads
    engine.close()

    print(f"\n{'part':<34} {'ponder':>10} {'baseline':>10} {'ratio':>7} {'target':>7}")
    print(
        f"{str(memory['forks']) + '-fork KV blocks vs needed':<34} {memory['blocks_used']:>10} "
        f"{memory['prompt_blocks'] + memory['generated_blocks']:>10} {memory['ratio']:>7} "
        f"{'<=1.1':>7}"
    )
    print(
        f"{'step-wise prompt tokens recomputed':<34} "
        f"{steps['prompt_recomputed_after_first_prefill']:>10} {'':>10} {'':>7} {'0':>7}"
    )
    print(
        f"{str(concurrency['prompts']) + ' prompts at once vs serial tok/s':<34} "
        f"{concurrency['batched_tok_s']:>10} "
        f"{concurrency['serial_tok_s']:>10} {concurrency['ratio']:>7} {'':>7}"
    )
    result = {
        "bench": "engine_sharing",
        "seed": args.seed,
        "block_size": args.block_size,
        "threads": args.threads,
        "engine_threads": engine_threads,
        "device": "cpu",
        "memory": memory,
        "stepwise": steps,
        "concurrency": concurrency,
        "leaked_blocks": leaked,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
