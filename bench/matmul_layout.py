"""Decode-step matmuls on this CPU: weight layouts under F.linear, and packed strips in C.

    python bench/matmul_layout.py

F.linear(x, W) multiplies x (B, in) by W^T for W (out, in). With W stored row-major (as loaded)
MKL reads it transposed; stored column-major (W = contiguous (in, out) transposed, what
CausalLM.column_major_weights does on the CPU) it reads it in order. Times both for the
projection shapes of the embedded model and SmolLM2-135M at 16 and 64 rows, with one thread and
with every core, in one process (medians of interleaved repeats).

Then the streaming case, what a decode step of a model larger than the caches does: 60 weights
of SmolLM2's MLP shape (576 -> 3072, 424 MB in all) multiplied in turn, so each is read from
memory, by F.linear on the column-major weight (MKL) and by cpu_kernels.packed_linear on the same
weight packed in 64-column strips, at 1-64 rows, every core; GB/s of weights read. Prints a
table and a final JSON line; writes bench/results/matmul_layout.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = {  # (in, out) of each decoder projection
    "embedded": [(128, 256), (128, 128), (128, 1024), (512, 128)],
    "smollm2": [(576, 960), (576, 576), (576, 3072), (1536, 576)],
}


def timed(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def stream(rounds: int) -> list[dict]:
    """MKL vs packed strips over weights read from memory (see the module docstring)."""
    from ponder.engine.torch_backend import cpu_kernels

    if not cpu_kernels.available()[0]:
        print("streaming: skipped, no C kernels here")
        return []
    weights = [torch.randn(3072, 576).t().contiguous().t() for _ in range(60)]
    packed = [cpu_kernels.pack_weight(w) for w in weights]
    size = sum(w.numel() * 4 for w in weights)
    out = []
    for batch in (1, 4, 8, 16, 32, 64):
        x = torch.randn(batch, 576)
        mkl, strips = [], []
        for _ in range(rounds):  # interleaved
            for ws, fn, log in (
                (weights, lambda w: F.linear(x, w), mkl),  # noqa: B023
                (packed, lambda p: cpu_kernels.packed_linear(x, p, None), strips),  # noqa: B023
            ):
                start = time.perf_counter()
                for w in ws:
                    fn(w)
                log.append(time.perf_counter() - start)
        row = {
            "rows": batch,
            "mkl_gb_s": round(size / statistics.median(mkl) / 1e9, 1),
            "packed_gb_s": round(size / statistics.median(strips) / 1e9, 1),
        }
        row["speedup"] = round(row["packed_gb_s"] / row["mkl_gb_s"], 2)
        out.append(row)
        print(f"streaming B={batch:<3d} MKL {row['mkl_gb_s']:5.1f} GB/s  packed "
              f"{row['packed_gb_s']:5.1f} GB/s  x{row['speedup']}")  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "matmul_layout.json"))
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    cores = torch.get_num_threads()
    rows = []
    for model, shapes in SHAPES.items():
        for fan_in, fan_out in shapes:
            w = torch.randn(fan_out, fan_in)
            col = w.t().contiguous().t()
            for batch in (16, 64):
                x = torch.randn(batch, fan_in)
                for threads in sorted({1, cores}):
                    torch.set_num_threads(threads)
                    repeats = max(20, int(2e8 / (batch * fan_in * fan_out)))
                    a, b = [], []
                    for _ in range(args.rounds):  # interleaved
                        a.append(timed(lambda: F.linear(x, w), repeats))  # noqa: B023
                        b.append(timed(lambda: F.linear(x, col), repeats))  # noqa: B023
                    row_us, col_us = statistics.median(a) * 1e6, statistics.median(b) * 1e6
                    rows.append({
                        "model": model, "in": fan_in, "out": fan_out, "rows": batch,
                        "threads": threads, "row_major_us": round(row_us, 1),
                        "column_major_us": round(col_us, 1), "speedup": round(row_us / col_us, 2),
                    })  # fmt: skip
                    r = rows[-1]
                    print(f"{model:9s} {fan_in:5d}->{fan_out:<5d} B={batch:<3d} t={threads} "
                          f"row-major {r['row_major_us']:8.1f} us  column-major "
                          f"{r['column_major_us']:8.1f} us  x{r['speedup']}")  # fmt: skip
    torch.set_num_threads(cores)
    streaming = stream(args.rounds)
    speedups = [r["speedup"] for r in rows]
    result = {
        "bench": "matmul_layout",
        "seed": args.seed,
        "cores": cores,
        "rows": rows,
        "speedup_min": min(speedups),
        "speedup_median": statistics.median(speedups),
        "speedup_max": max(speedups),
        "streaming": streaming,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
