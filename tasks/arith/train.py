"""Train the embedded arith model from scratch: a tiny Llama, seeded, on 2 CPU cores.

    python -m ponder.tasks.arith.train --out embedded/model --minutes 18

Writes a Hugging Face folder (config.json, model.safetensors, tokenizer.json,
generation_config.json) plus `training.json` (the exact arguments, the loss curve and the wall
time), so the committed checkpoint can be traced back to this script. Training data are drawn
only from the train split of every difficulty level; the held-out split is never seen.

Deterministic for a given seed and step count on one machine; the wall-clock cap (--minutes)
stops early on a slower machine, which changes the result, so the step count is logged.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from ponder.tasks.arith.problems import LEVELS, random_problem
from ponder.tasks.arith.tokenizer import build_tokenizer
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

IGNORE = -100


def model_config(vocab_size: int, pad: int, bos: int, eos: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, as in the Llama/Qwen checkpoints
        head_dim=32,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        rope_theta=10_000.0,
        tie_word_embeddings=True,
        pad_token_id=pad,
        bos_token_id=bos,
        eos_token_id=eos,
    )


def make_batch(rng: random.Random, tokenizer, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, labels) of one difficulty level; loss on the solution and EOS.

    One level per batch keeps padding small (lengths differ ~4x across levels). No attention
    mask is needed: padding is on the right and attention is causal, so real tokens never see
    it, and padded positions carry no loss.
    """
    rows, labels = [], []
    difficulty = LEVELS[rng.choice(sorted(LEVELS))]
    for _ in range(batch_size):
        problem = random_problem(rng, split="train", difficulty=difficulty)
        prompt = tokenizer(problem.prompt).input_ids  # starts with <bos>
        answer = tokenizer(problem.solution, add_special_tokens=False).input_ids
        ids = prompt + answer + [tokenizer.eos_token_id]
        rows.append(ids)
        labels.append([IGNORE] * len(prompt) + answer + [tokenizer.eos_token_id])
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])  # (B, T)
    label_ids = torch.tensor([r + [IGNORE] * (width - len(r)) for r in labels])  # (B, T)
    return input_ids, label_ids


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(f"arith-train:{args.seed}")
    tokenizer = build_tokenizer()
    # Round the embedding up to a multiple of 8 rows; the extra ids are never produced.
    vocab_size = (len(tokenizer) + 7) // 8 * 8
    config = model_config(
        vocab_size, tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id
    )
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params: {n_params / 1e6:.2f}M  steps: {args.steps}  batch: {args.batch_size}")

    curve = []
    start = time.perf_counter()
    step = 0
    for step in range(args.steps):
        if time.perf_counter() - start > args.minutes * 60:
            print(f"stopping at step {step}: wall-clock cap of {args.minutes} min reached")
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
        input_ids, labels = make_batch(rng, tokenizer, args.batch_size)
        loss = model(input_ids=input_ids, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % args.log_every == 0 or step == args.steps - 1:
            elapsed = time.perf_counter() - start
            curve.append({"step": step, "loss": round(loss.item(), 4), "seconds": round(elapsed)})
            print(f"step {step:5d}  loss {loss.item():.4f}  {elapsed:6.0f}s", flush=True)
    else:
        step = args.steps

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=True,
        temperature=1.0,
        max_new_tokens=256,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    record = {
        "args": vars(args),
        "params": n_params,
        "steps_done": step,
        "wall_seconds": round(time.perf_counter() - start),
        "torch": torch.__version__,
        "curve": curve,
    }
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="embedded/model")
    parser.add_argument("--steps", type=int, default=1700)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=19.0)
    parser.add_argument("--log-every", type=int, default=100)
    return parser.parse_args(argv)


if __name__ == "__main__":
    train(parse_args())
