"""GPU decode: ponder (Triton paged kernel + CUDA graphs) vs HF generate vs the bandwidth floor.

    python bench/gpu_decode.py                       # SmolLM2-135M's shape, bf16, seeded weights
    python bench/gpu_decode.py --model DIR           # a real Hugging Face folder instead

Needs a CUDA GPU with Triton. Three parts, one table each, then a final JSON line; results go
to bench/results/gpu_decode.json (or --out):

1. Greedy agreement with HF `generate` on 8 ragged token-id prompts: the embedded arith model in
   fp32 (real weights) and the benchmark model in bf16; ponder with CUDA graphs vs without
   (the same kernels must give the same tokens), and with the fused kernels (fused_ops.py).
2. Throughput: generated tokens/s of one best-of-n request (EOS ignored, fixed length) at batch
   1, 16 and 64, with a short and a ~330-token prompt, for ponder with graphs, with graphs and
   the fused kernels, without graphs (the same kernels launched eagerly) and HF `generate`
   (sampling, same lengths), and the floor no decoder can beat: every step reads all weights
   once plus each row's KV, so tok/s <= batch / ((weights + KV bytes) / bandwidth), taking the
   mean context and the bandwidth of a device-to-device copy measured here (--bandwidth-gbs
   overrides it).
3. Per decode step at batch 64: the graph replay alone (CUDA events) against the engine's whole
   step (wall clock): the rest is the engine's overhead outside the forward pass. With
   --profile DIR, also the engine's Python by function and the forward's kernels.

Without --model the benchmark model has SmolLM2-135M-Instruct's configuration (30 layers,
hidden 576, 9 query / 3 kv heads, vocab 49152, tied embeddings) with seeded random weights:
the real weights do not fit the 64 MiB this project's GPU runs may carry, and decode speed at a
fixed length does not depend on weight values. Prompts are token ids for the same reason.

bench/results/gpu_decode.json holds the one H200 run so far (2026-12-04), taken before the fused
kernels and the fused column existed: the fused kernels have been checked only under Triton's
CPU interpreter, and are off unless Engine(fused_kernels=True) asks for them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
SMOLLM2_135M = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
    "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152,
    "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
    "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
    "initializer_range": 0.041666666666666664,
}  # fmt: skip


VARIANTS = {  # ponder's CUDA configurations
    "graphs": {"cuda_graphs": True},
    "fused": {"cuda_graphs": True, "fused_kernels": True},
    "eager": {"cuda_graphs": False},
}


def smollm2_shaped(folder: Path, dtype: torch.dtype) -> Path:
    """A Hugging Face folder with SmolLM2-135M's config, seeded random weights and the embedded
    model's tokenizer files (only token ids are fed, so the tokenizer is never used on text)."""
    from ponder import embedded
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M)).to(dtype)
    model.save_pretrained(folder)
    for f in Path(embedded.model_path()).iterdir():
        if "token" in f.name or f.name == "special_tokens_map.json":
            shutil.copy(f, folder / f.name)
    return folder


def copy_bandwidth_gbs() -> float:
    """Device-to-device copy of 1 GiB, bytes read + written per second (best of 5)."""
    src = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        torch.cuda.synchronize()
        start = time.perf_counter()
        dst.copy_(src)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    del src, dst
    return 2 * 2**30 / best / 1e9


def floor_tok_s(config: dict, dtype, batch: int, context: float, bandwidth_gbs: float) -> float:
    element = torch.finfo(dtype).bits // 8
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    layers = config["num_hidden_layers"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    per_layer = hidden * head_dim * (2 * heads + 2 * kv_heads) + 3 * hidden * inter + 2 * hidden
    embed = config["vocab_size"] * hidden * (1 if config.get("tie_word_embeddings") else 2)
    weights = (layers * per_layer + embed + hidden) * element
    kv = 2 * layers * kv_heads * head_dim * element * context * batch
    return batch / ((weights + kv) / (bandwidth_gbs * 1e9))


def prompts(vocab: int, count: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = [3, 7, 12, 16, 21, 30, 45, 64][:count]
    return [[1] + torch.randint(3, vocab, (n - 1,), generator=g).tolist() for n in lengths]


@torch.inference_mode()
def hf_greedy(model, prompt: list[int], tokens: int) -> list[int]:
    ids = torch.tensor([prompt], device="cuda")
    out = model.generate(
        ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0
    )
    return out[0, len(prompt) :].tolist()


def ponder_greedy(engine, prompt: list[int], tokens: int) -> list[int]:
    from ponder.engine import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    return list(engine.generate(prompt, params)[0].outputs[0].token_ids)


def agreement(path, dtype, tokens: int) -> dict:
    """Greedy tokens of 8 ragged prompts, each alone: ponder with graphs, without, and HF."""
    from ponder.engine import Engine
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).cuda().eval()
    vocab = hf.config.vocab_size
    batch = prompts(vocab, 8, seed=1)
    want = [hf_greedy(hf, p, tokens) for p in batch]
    exact = want
    if dtype != torch.float32:  # how far low precision alone moves HF's own tokens
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).cuda().eval()
        exact = [hf_greedy(hf, p, tokens) for p in batch]
    del hf
    got = {}
    for name, options in VARIANTS.items():
        with Engine.from_pretrained(path, device="cuda", dtype=dtype, **options) as e:
            got[name] = [ponder_greedy(e, p, tokens) for p in batch]
    pairs = list(zip(got["graphs"], want, strict=True))
    first_diff = [next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)
                  for a, b in pairs]  # fmt: skip
    return {
        "prompts": len(batch),
        "tokens_each": tokens,
        "equal_to_hf": sum(a == b for a, b in pairs),
        "equal_tokens_to_hf": count(got["graphs"], want),
        "first_divergence": first_diff,
        "graphs_equal_eager": got["graphs"] == got["eager"],
        "fused_equal_tokens_to_hf": count(got["fused"], want),
        "ponder_equal_tokens_to_hf_fp32": count(got["graphs"], exact),
        "hf_equal_tokens_to_hf_fp32": count(want, exact),
    }


def count(a: list[list[int]], b: list[list[int]]) -> int:
    """Positions where two lists of token lists agree."""
    return sum(x == y for s, t in zip(a, b, strict=True) for x, y in zip(s, t, strict=True))


def ponder_tok_s(engine, prompt: list[int], batch: int, tokens: int) -> float:
    from ponder.engine import SamplingParams

    params = SamplingParams(n=batch, max_tokens=tokens, seed=0, ignore_eos=True)
    engine.generate(prompt, SamplingParams(n=batch, max_tokens=8, seed=1, ignore_eos=True))
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = engine.generate(prompt, params)[0]
    torch.cuda.synchronize()
    return sum(len(c.token_ids) for c in out.outputs) / (time.perf_counter() - start)


@torch.inference_mode()
def hf_tok_s(model, prompt: list[int], batch: int, tokens: int) -> float:
    ids = torch.tensor([prompt], device="cuda")
    kwargs = dict(do_sample=True, num_return_sequences=batch, pad_token_id=0)
    model.generate(ids, max_new_tokens=8, min_new_tokens=8, **kwargs)  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, **kwargs)
    torch.cuda.synchronize()
    return (out.shape[1] - ids.shape[1]) * batch / (time.perf_counter() - start)


def step_split(engine, prompt: list[int], batch: int, tokens: int) -> dict:
    """Median wall ms of the engine's decode steps at `batch` vs the graph replay alone."""
    from ponder.engine import SamplingParams

    core, walls = engine.core, []
    inner = core.step

    def timed_step(*args, **kwargs):
        start = time.perf_counter()
        out = inner(*args, **kwargs)
        walls.append(time.perf_counter() - start)
        return out

    core.step = timed_step
    engine.generate(prompt, SamplingParams(n=batch, max_tokens=tokens, seed=2, ignore_eos=True))
    core.step = inner
    decoder = core.runner.cuda_decoder
    graph, _ = decoder.graphs[batch]
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    replays = []
    for _ in range(50):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        replays.append(start.elapsed_time(end))
    step = statistics.median(walls[4:]) * 1e3  # past the prefill and the first samples
    replay = statistics.median(replays)
    return {"batch": batch, "step_ms": round(step, 3), "replay_ms": round(replay, 3),
            "overhead_ms": round(step - replay, 3)}  # fmt: skip


def profiles(engine, prompt: list[int], folder: Path) -> None:
    """Where a batch-64 decode step goes: the engine's Python (cProfile of one request, by own
    time) and the forward's kernels (torch.profiler over eager forwards, by CUDA time)."""
    import cProfile
    import io
    import pstats

    from ponder.engine import SamplingParams

    folder.mkdir(parents=True, exist_ok=True)
    params = SamplingParams(n=64, max_tokens=64, seed=3, ignore_eos=True)
    profiler = cProfile.Profile()
    profiler.enable()
    engine.generate(prompt, params)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
    (folder / "engine_step_cprofile.txt").write_text(text.getvalue())
    decoder = engine.core.runner.cuda_decoder
    with (
        torch.inference_mode(),
        torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        ) as prof,
    ):
        for _ in range(3):
            decoder._forward(64)
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=30)
    (folder / "forward_kernels.txt").write_text(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="HF folder (default: SmolLM2-135M shape)")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--bandwidth-gbs", type=float, default=None)
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--out", default=str(RESULTS / "gpu_decode.json"))
    parser.add_argument("--profile", type=Path, default=None, help="write profiles to this folder")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_decode.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    from ponder import embedded
    from ponder.engine import Engine
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, args.dtype)
    scratch = Path(tempfile.mkdtemp(prefix="ponder-gpu-"))
    path = Path(args.model) if args.model else smollm2_shaped(scratch / "smollm2-135m", dtype)
    config = json.loads((path / "config.json").read_text())
    bandwidth = args.bandwidth_gbs or copy_bandwidth_gbs()
    print(f"device {torch.cuda.get_device_name()}, bandwidth {bandwidth:.0f} GB/s", flush=True)

    checks = {
        "embedded_fp32": agreement(embedded.model_path(), torch.float32, 32),
        f"{path.name}_{args.dtype}": agreement(path, dtype, 32),
    }
    print("greedy agreement:", json.dumps(checks), flush=True)

    hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).cuda().eval()
    g = torch.Generator().manual_seed(0)
    prompt_sets = {
        "short": [1] + torch.randint(3, config["vocab_size"], (15,), generator=g).tolist(),
        "long": [1] + torch.randint(3, config["vocab_size"], (329,), generator=g).tolist(),
    }
    engines = {
        name: Engine.from_pretrained(path, device="cuda", dtype=dtype, kv_cache_gb=4.0, **options)
        for name, options in VARIANTS.items()
    }
    rows = []
    for name, prompt in prompt_sets.items():
        for batch in [int(b) for b in args.batches.split(",")]:
            context = len(prompt) + args.tokens / 2
            row = {
                "prompt": name,
                "prompt_tokens": len(prompt),
                "batch": batch,
                **{
                    f"{name}_tok_s": round(ponder_tok_s(e, prompt, batch, args.tokens))
                    for name, e in engines.items()
                },
                "hf_tok_s": round(hf_tok_s(hf, prompt, batch, args.tokens)),
                "floor_tok_s": round(floor_tok_s(config, dtype, batch, context, bandwidth)),
            }
            best = max(row["graphs_tok_s"], row["fused_tok_s"])
            row["vs_hf"] = round(best / row["hf_tok_s"], 2)
            row["graphs_vs_eager"] = round(row["graphs_tok_s"] / row["eager_tok_s"], 2)
            row["fused_vs_graphs"] = round(row["fused_tok_s"] / row["graphs_tok_s"], 2)
            row["of_floor"] = round(best / row["floor_tok_s"], 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    split = {
        name: step_split(engines[name], prompt_sets["short"], 64, 64)
        for name in ("graphs", "fused")
    }
    if args.profile:
        profiles(engines["fused"], prompt_sets["short"], args.profile)
    for e in engines.values():
        e.close()

    head = f"{'prompt':>6} {'batch':>5} {'graphs':>8} {'fused':>8} {'eager':>8} {'HF':>8}"
    print(head + f" {'floor':>9} {'/HF':>6} {'of floor':>9}")
    for r in rows:
        print(f"{r['prompt']:>6} {r['batch']:>5} {r['graphs_tok_s']:>8} {r['fused_tok_s']:>8} "
              f"{r['eager_tok_s']:>8} {r['hf_tok_s']:>8} {r['floor_tok_s']:>9} {r['vs_hf']:>6} "
              f"{r['of_floor']:>9}")  # fmt: skip
    print("decode step at batch 64 (ms):", split)
    result = {
        "bench": "gpu_decode",
        "model": str(args.model or "SmolLM2-135M shape, seeded random weights"),
        "dtype": args.dtype,
        "tokens": args.tokens,
        "device": torch.cuda.get_device_name(),
        "bandwidth_gbs": round(bandwidth),
        "torch": torch.__version__,
        "greedy": checks,
        "rows": rows,
        "step_batch64": split,
        "argv": sys.argv[1:],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
