"""CPU forward step time with torch's F.linear vs oneDNN-prepacked weights (packed_linear.py).

    python bench/cpu_linear.py                                  # embedded model
    python bench/cpu_linear.py --model models/smollm2 --threads 2

One model, both ways in one process, interleaved: a decode step at batch 1, 16 and 64 over a
shared prompt (the runner's real decode path), and a prefill of that prompt. Medians of
`--repeats` rounds, each timing `--steps` forwards; prints a table and a final JSON line; writes
bench/results/cpu_linear[_NAME].json (or --out). Decides Engine(packed_linears=...)'s default.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from ponder import embedded
from ponder.engine.torch_backend import packed_linear
from ponder.engine.torch_backend.model import CausalLM
from ponder.engine.torch_backend.model_runner import ForwardInput, ModelRunner

RESULTS = Path(__file__).resolve().parent / "results"


def workloads(prompt_len: int, block_size: int) -> dict[str, list[ForwardInput]]:
    prompt = tuple(3 + i % 90 for i in range(prompt_len))
    full = prompt_len // block_size
    shared = tuple(range(full))
    out = {"prefill": [ForwardInput(prompt, 0, tuple(range(1000, 1000 + full + 1)))]}
    for batch in (1, 16, 64):  # forks of the prompt, each decoding its first token
        out[f"decode b={batch}"] = [
            ForwardInput((5,), prompt_len, shared + (2000 + r,)) for r in range(batch)
        ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompt-tokens", type=int, default=330)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = CausalLM.from_pretrained(args.model or embedded.model_path())
    prompt_len = min(args.prompt_tokens, model.config.max_position_embeddings - 8)
    runner = ModelRunner(model, num_blocks=2200, block_size=16)
    # Fill the shared prompt's KV once (blocks 0..full-1 hold the prompt for every decode row).
    prompt = tuple(3 + i % 90 for i in range(prompt_len))
    runner.run([ForwardInput(prompt, 0, tuple(range(prompt_len // 16 + 1)))])
    times: dict[str, dict[bool, list[float]]] = {}
    for _ in range(args.repeats):
        for name, inputs in workloads(prompt_len, 16).items():
            for packed in (False, True):
                (packed_linear.pack_linears if packed else packed_linear.unpack_linears)(model)
                runner.run(inputs)  # warm-up for this shape
                start = time.perf_counter()
                for _ in range(args.steps):
                    runner.run(inputs)
                ms = (time.perf_counter() - start) / args.steps * 1e3
                times.setdefault(name, {False: [], True: []})[packed].append(ms)
    rows = []
    for name, t in times.items():
        plain, packed = statistics.median(t[False]), statistics.median(t[True])
        rows.append(
            {"workload": name, "linear_ms": round(plain, 3), "packed_ms": round(packed, 3),
             "speedup": round(plain / packed, 2)}
        )  # fmt: skip
    print(f"{'workload':<14} {'F.linear ms':>12} {'packed ms':>10} {'speedup':>8}")
    for r in rows:
        print(f"{r['workload']:<14} {r['linear_ms']:>12} {r['packed_ms']:>10} {r['speedup']:>8}")
    name = Path(args.model).name if args.model else "embedded"
    result = {"bench": "cpu_linear", "model": name, "threads": args.threads,
              "prompt_tokens": prompt_len, "rows": rows}  # fmt: skip
    out = Path(args.out or RESULTS / f"cpu_linear_{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
