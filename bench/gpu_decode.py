"""GPU decode throughput: ponder vs HF generate vs the memory-bandwidth floor. NOT YET RUN.

    python bench/gpu_decode.py --model models/smollm2 --bandwidth-gbs 4800   # e.g. an H200

Written on a CPU-only machine for whoever has a CUDA GPU: it has never been run, so treat its
first results (and any failure) as news. For batch sizes 1, 16 and 64 it measures generated
tokens per second of one best-of-n request (EOS ignored, fixed length) on ponder's engine and on
HF `generate` (bf16 by default), and the floor below which no decoder can go: every step must
read all weights once plus each sequence's KV, so tok/s <= batch / (bytes per step / bandwidth).
Prints a table and a final JSON line; writes bench/results/gpu_decode.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def bytes_per_step(model, batch: int, context: int, dtype: torch.dtype) -> int:
    """Weights once plus the KV of `batch` sequences of `context` tokens (an upper bound on what
    a shared prompt costs: cascade attention reads it once)."""
    c = model.config
    element = torch.finfo(dtype).bits // 8
    weights = sum(p.numel() for p in model.parameters()) * element
    kv = 2 * c.num_hidden_layers * c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    return weights + batch * context * kv * element


def ponder_tok_s(path: str, prompt: str, batch: int, tokens: int, dtype) -> float:
    from ponder.engine import Engine, SamplingParams

    with Engine.from_pretrained(path, device="cuda", dtype=dtype) as engine:
        params = SamplingParams(n=batch, max_tokens=tokens, seed=0, ignore_eos=True)
        engine.generate(prompt, SamplingParams(n=batch, max_tokens=4))  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = engine.generate(prompt, params)[0]
        torch.cuda.synchronize()
        return sum(len(c.token_ids) for c in out.outputs) / (time.perf_counter() - start)


@torch.inference_mode()
def hf_tok_s(model, tok, prompt: str, batch: int, tokens: int) -> float:
    ids = tok(prompt, return_tensors="pt").input_ids.cuda()
    kwargs = dict(do_sample=True, num_return_sequences=batch, pad_token_id=tok.pad_token_id or 0)
    model.generate(ids, max_new_tokens=4, **kwargs)  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, **kwargs)
    torch.cuda.synchronize()
    return (out.shape[1] - ids.shape[1]) * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="HF folder, e.g. models/smollm2")
    parser.add_argument("--bandwidth-gbs", type=float, required=True, help="GPU memory GB/s")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", default=str(RESULTS / "gpu_decode.json"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_decode.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, args.dtype)
    tok = AutoTokenizer.from_pretrained(args.model)
    hf = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).cuda().eval()
    prompt = "Question: what is 12 + 30? Answer step by step.\n"
    prompt_len = len(tok(prompt).input_ids)
    rows = []
    for batch in (1, 16, 64):
        floor_s = bytes_per_step(hf, batch, prompt_len + args.tokens, dtype) / (
            args.bandwidth_gbs * 1e9
        )
        row = {
            "batch": batch,
            "ponder_tok_s": round(ponder_tok_s(args.model, prompt, batch, args.tokens, dtype)),
            "hf_tok_s": round(hf_tok_s(hf, tok, prompt, batch, args.tokens)),
            "floor_tok_s": round(batch / floor_s),
        }
        row["ponder_vs_hf"] = round(row["ponder_tok_s"] / row["hf_tok_s"], 2)
        row["ponder_of_floor"] = round(row["ponder_tok_s"] / row["floor_tok_s"], 3)
        rows.append(row)
    print(f"{'batch':>5} {'ponder':>9} {'HF':>9} {'floor':>9} {'/HF':>6} {'of floor':>9}")
    for r in rows:
        print(f"{r['batch']:>5} {r['ponder_tok_s']:>9} {r['hf_tok_s']:>9} {r['floor_tok_s']:>9} "
              f"{r['ponder_vs_hf']:>6} {r['ponder_of_floor']:>9}")  # fmt: skip
    result = {"bench": "gpu_decode", "model": args.model, "dtype": args.dtype,
              "device": torch.cuda.get_device_name(), "rows": rows}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
