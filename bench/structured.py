"""Constrained decoding on the embedded model: the three grammar backends, measured alike.

    python bench/structured.py            # seeded; writes bench/results/structured.json
    python bench/structured.py --quick    # smaller sizes, for a smoke run

1. Compile: seconds to build each backend's vocabulary, then to compile each JSON schema of
   tests/structured_cases.py and the arith answer-span regex (first compile, no cache).
2. Correctness: n samples per schema at temperature 1; the share that parse and validate
   (`jsonschema`), and how many ran to max_tokens.
3. Overhead: decoding at batch 1/16/64 (48 tokens, ignore_eos, so every row runs every step)
   unconstrained vs constrained by the arith answer-span regex and by a JSON schema: wall
   ms per step, and the time inside the two structured hooks (mask + advance) per step.
4. Arith: one sample per problem at temperature 1.0, 1.5 and 2.0, free vs with the answer-span
   constraint (`ArithTask.answer_constraint()`): answers that do not parse, and accuracy.

Prints a table per part and a final JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import jsonschema
import torch
from ponder.engine import Engine, SamplingParams
from ponder.engine.structured import StructuredOutputsParams as S
from ponder.engine.structured import hooks
from ponder.engine.structured.compiler import DEFAULT_BACKEND, GrammarCompiler
from ponder.tasks.arith.task import ArithTask

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.structured_cases import SCHEMAS  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BACKENDS = ["outlines", "llguidance"] + (
    ["xgrammar"] if importlib.util.find_spec("xgrammar") else []
)
PROMPT = "Q: 3+4*2\n"
OPEN_JSON = {"type": "array", "items": SCHEMAS["nested"]}  # never completes within 48 tokens


def compile_times(engine: Engine) -> dict:
    out = {}
    constraints = {name: S(json=schema) for name, schema in SCHEMAS.items()}
    constraints["arith_answer"] = ArithTask().answer_constraint()
    for backend in BACKENDS:
        compiler = GrammarCompiler(
            engine.tokenizer,
            vocab_size=engine.core.runner.vocab_size,
            eos_ids=engine.eos_token_ids,
            backend=backend,
        )
        start = time.perf_counter()
        compiler._load_backend()
        row = {"vocabulary_s": time.perf_counter() - start}
        for name, constraint in constraints.items():
            row[name] = compiler.compile(constraint).compile_s
        out[backend] = row
    return out


def correctness(engines: dict, n: int, seed: int) -> dict:
    out = {}
    for backend, engine in engines.items():
        row = {}
        for name, schema in SCHEMAS.items():
            params = SamplingParams(
                n=n, temperature=1.0, seed=seed, max_tokens=200, structured_outputs=S(json=schema)
            )
            valid = length = 0
            for o in engine.generate(PROMPT, params)[0].outputs:
                length += o.finish_reason == "length"
                try:
                    jsonschema.validate(json.loads(o.text), schema)
                    valid += 1
                except (ValueError, jsonschema.ValidationError):
                    pass
            row[name] = {"valid": valid / n, "length": length}
        out[backend] = row
    return out


class HookTimer:
    """Wall time spent inside the structured hooks (mask + advance), patched in for a run."""

    def __init__(self):
        self.seconds = 0.0
        self._orig = (hooks.apply_masks, hooks.advance)

    def _timed(self, fn):
        def wrapper(*args):
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self.seconds += time.perf_counter() - start

        return wrapper

    def __enter__(self):
        hooks.apply_masks, hooks.advance = (self._timed(f) for f in self._orig)
        return self

    def __exit__(self, *exc):
        hooks.apply_masks, hooks.advance = self._orig


def decode_run(engine: Engine, batch: int, constraint, seed: int) -> dict:
    params = SamplingParams(
        n=batch, temperature=1.0, seed=seed, max_tokens=48, ignore_eos=True,
        structured_outputs=constraint,
    )  # fmt: skip
    engine.generate(PROMPT, params)  # warm-up (and the first compile)
    steps0 = engine.core.counters.steps
    with HookTimer() as timer:
        start = time.perf_counter()
        engine.generate(PROMPT, params)
        wall = time.perf_counter() - start
    steps = engine.core.counters.steps - steps0
    return {"step_ms": 1e3 * wall / steps, "hook_ms": 1e3 * timer.seconds / steps, "steps": steps}


def overhead(engines: dict, batches: list[int], seed: int) -> dict:
    first = next(iter(engines.values()))
    out = {"none": {b: decode_run(first, b, None, seed) for b in batches}}
    for backend, engine in engines.items():
        for label, constraint in [
            ("arith_answer", ArithTask().answer_constraint()),
            ("json", S(json=OPEN_JSON)),
        ]:
            out[f"{backend}/{label}"] = {
                b: decode_run(engine, b, constraint, seed) for b in batches
            }
    return out


def arith(engine: Engine, problems: int, seed: int) -> dict:
    task = ArithTask()
    items = task.items(problems, seed=seed)
    out = {}
    for temperature in (1.0, 1.5, 2.0):
        for label, constraint in [("free", None), ("constrained", task.answer_constraint())]:
            params = SamplingParams(
                temperature=temperature, seed=seed, max_tokens=400, structured_outputs=constraint
            )
            results = engine.generate([it.prompt for it in items], params)
            answers = [task.extract_answer(r.outputs[0].text) for r in results]
            out[f"T={temperature}/{label}"] = {
                "parse_failures": sum(a is None for a in answers),
                "accuracy": sum(
                    task.is_correct(it, a) for it, a in zip(items, answers, strict=True)
                )
                / len(items),
                "length": sum(r.outputs[0].finish_reason == "length" for r in results),
            }
    return out


def print_tables(result: dict) -> None:
    print("compile seconds (vocabulary, then per constraint)")
    for backend, row in result["compile_s"].items():
        print(f"  {backend:<11}" + "  ".join(f"{k}={v:.3f}" for k, v in row.items()))
    print("JSON samples valid (share) / ran to max_tokens")
    for backend, row in result["correctness"].items():
        cells = "  ".join(f"{k}={v['valid']:.2f}/{v['length']}" for k, v in row.items())
        print(f"  {backend:<11}{cells}")
    print(
        "decode ms per step (hooks ms per step) at batch " + "/".join(map(str, result["batches"]))
    )
    for label, row in result["overhead"].items():
        cells = "  ".join(f"{v['step_ms']:7.2f} ({v['hook_ms']:5.2f})" for v in row.values())
        print(f"  {label:<24}{cells}")
    print("arith, one sample per problem: parse failures / accuracy / ran to max_tokens")
    for label, row in result["arith"].items():
        print(f"  {label:<18}{row['parse_failures']:4d}  {row['accuracy']:.3f}  {row['length']:3d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "structured.json")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    batches = [1, 16] if args.quick else [1, 16, 64]
    engines = {
        b: Engine.from_pretrained(None, device="cpu", structured_backend=b) for b in BACKENDS
    }
    first = engines[BACKENDS[0]]
    result = {
        "bench": "structured",
        "seed": args.seed,
        "backends": BACKENDS,
        "batches": batches,
        "compile_s": compile_times(first),
        "correctness": correctness(engines, 4 if args.quick else 16, args.seed),
        "overhead": overhead(engines, batches, args.seed),
        "arith": arith(engines[DEFAULT_BACKEND], 20 if args.quick else 200, args.seed),
    }
    for engine in engines.values():
        engine.close()
    print_tables(result)
    if not args.quick:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
