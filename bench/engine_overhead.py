"""Per-step engine overhead outside the model's forward pass, at a given batch size.

    python bench/engine_overhead.py                      # embedded model, n = 64
    python bench/engine_overhead.py --n 64 --stop "\\n"  # with a stop string checked per token

Runs one best-of-n request (EOS ignored) and times, per decode step, the whole `EngineCore.step`
and the model's forward inside it; overhead = step - forward (scheduling, batch metadata, the
logits head, sampling, postprocess and stop checks). Medians over the steps; prints a table and a
final JSON line; writes bench/results/engine_overhead.json (or --out). Target: under 1 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from ponder.engine import Engine, SamplingParams
from ponder.tasks.arith import generate

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("schedule", "sample", "postprocess")


def timed(obj, name: str, log: list[float]) -> None:
    """Replace obj.name with a wrapper that appends each call's wall seconds to `log`."""
    inner = getattr(obj, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = inner(*args, **kwargs)
        log.append(time.perf_counter() - start)
        return out

    setattr(obj, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--stop", action="append", default=[])
    parser.add_argument("--out", default=str(RESULTS / "engine_overhead.json"))
    args = parser.parse_args()
    engine = Engine.from_pretrained(args.model, block_size=16, num_blocks=8192)
    prompt = generate(1, split="heldout", seed=0, difficulty=4)[0].prompt
    core = engine.core
    logs: dict[str, list[float]] = {k: [] for k in ("step", "forward", "run", *PARTS)}
    timed(core, "step", logs["step"])
    timed(core.runner.model, "forward", logs["forward"])
    timed(core.runner, "run", logs["run"])
    timed(core.scheduler, "schedule", logs["schedule"])
    timed(core, "_sample", logs["sample"])
    timed(core.scheduler, "postprocess", logs["postprocess"])
    params = SamplingParams(
        n=args.n, temperature=1.0, max_tokens=args.max_tokens, seed=0, ignore_eos=True,
        stop=tuple(args.stop),
    )  # fmt: skip
    engine.generate(prompt, params)  # warm-up
    for log in logs.values():
        log.clear()
    engine.generate(prompt, params)
    engine.close()
    # Steps with a forward pass, past the prefill (the first two: prefill, first sample).
    steps, forwards = logs["step"][2:], logs["forward"][1:]
    pairs = list(zip(steps, forwards, strict=False))
    overhead = [s - f for s, f in pairs]
    runner_python = [r - f for r, f in zip(logs["run"][1:], forwards, strict=False)]
    parts = {k: logs[k][2:] for k in PARTS}
    parts["runner_python"] = runner_python  # metadata, input tensors, logits head
    row = {
        "n": args.n,
        "stop": args.stop,
        "steps": len(pairs),
        "step_ms": round(statistics.median(s for s, _ in pairs) * 1e3, 3),
        "forward_ms": round(statistics.median(f for _, f in pairs) * 1e3, 3),
        "overhead_ms": round(statistics.median(overhead) * 1e3, 3),
        "target_ms": 1.0,
        "overhead_parts_ms": {k: round(statistics.median(v) * 1e3, 3) for k, v in parts.items()},
        "torch_threads": torch.get_num_threads(),
    }
    print(f"{'n':>4} {'step ms':>9} {'forward ms':>11} {'overhead ms':>12}")
    print(f"{row['n']:>4} {row['step_ms']:>9} {row['forward_ms']:>11} {row['overhead_ms']:>12}")
    print("overhead parts (ms):", row["overhead_parts_ms"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(row, indent=1) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
