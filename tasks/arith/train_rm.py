"""Train the arith world's learned process reward model (the realistic, imperfect verifier).

    python -m ponder.tasks.arith.train_rm --out embedded/reward_model [--problems 300]

1. Sample `--samples` solutions per TRAIN-split problem (default level) from the embedded model
   with the engine (temperature 1, seeded).
2. Label every step with the exact step checker (ArithStepVerifier: 1 while the solution is on
   track, 0 from the first wrong step on), so the label of the final "A: n" step is also the
   outcome label.
3. Train a `LlamaForTokenClassification` (2 classes) warm-started from the embedded model's
   weights, in the step_token convention: the char tokenizer's "\\n" is the step separator, and
   the loss is cross-entropy at the separator after each step (inputs built by
   verifiers/process_reward_model.step_layout, exactly what ProcessRewardModel scores at inference).
4. Save the checkpoint + tokenizer + training.json (seed, data counts, loss curve, wall time).

Everything is seeded; the result is registered as the `arith_prm` / `arith_orm` verifiers.
Its held-out quality (AUROC, reliability) is measured by bench/arith_reward_model.py.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from ponder.tasks.arith import DEFAULT_LEVEL, STEP_DELIMITER, embedded_model_path, generate
from ponder.tasks.arith.verifiers import ArithStepVerifier
from ponder.verifiers.process_reward_model import step_layout
from ponder.verifiers.reward_model import single_token_id


def sample_labelled(problems, samples: int, seed: int) -> list[tuple[str, str, list[float]]]:
    from ponder.engine import Engine, SamplingParams

    with Engine.from_pretrained(None) as engine:
        outputs = engine.generate(
            [p.prompt for p in problems],
            SamplingParams(n=samples, temperature=1.0, seed=seed, max_tokens=320),
        )
    checker = ArithStepVerifier()
    rows = []
    for problem, out in zip(problems, outputs, strict=True):
        texts = [c.text for c in out.outputs]
        labels = checker.score([problem.prompt] * len(texts), texts)
        rows += [(problem.prompt, t, lab) for t, lab in zip(texts, labels, strict=True) if lab]
    return rows


def encode_rows(tokenizer, rows) -> list[tuple[list[int], list[int], list[int]]]:
    sep = single_token_id(tokenizer, STEP_DELIMITER, "step separator")
    out = []
    for prompt, text, labels in rows:
        ids, positions = step_layout(tokenizer, sep, STEP_DELIMITER, prompt, text)
        out.append((ids, positions, [int(x) for x in labels]))
    return out


def batch_tensors(batch, pad_id: int):
    longest = max(len(ids) for ids, _, _ in batch)
    ids = torch.full((len(batch), longest), pad_id)  # (B, T)
    mask = torch.zeros((len(batch), longest), dtype=torch.long)
    labels = torch.full((len(batch), longest), -100)  # ignored everywhere but step ends
    for row, (seq, positions, labs) in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        labels[row, positions] = torch.tensor(labs)
    return ids, mask, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--problems", type=int, default=300)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer, LlamaForTokenClassification

    start = time.perf_counter()
    problems = generate(args.problems, split="train", seed=args.seed, difficulty=DEFAULT_LEVEL)
    rows = sample_labelled(problems, args.samples, args.seed)
    sampled_at = time.perf_counter() - start
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    data = encode_rows(tokenizer, rows)
    step_labels = [x for _, _, labs in data for x in labs]
    model = LlamaForTokenClassification.from_pretrained(
        embedded_model_path(), num_labels=2, dtype=torch.float32
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    steps_total = args.epochs * -(-len(data) // args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=steps_total, pct_start=0.1
    )
    rng = random.Random(args.seed)
    curve = []
    model.train()
    for epoch in range(args.epochs):
        order = list(range(len(data)))
        rng.shuffle(order)
        for b in range(0, len(order), args.batch_size):
            ids, mask, labels = batch_tensors(
                [data[i] for i in order[b : b + args.batch_size]], tokenizer.pad_token_id
            )
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            curve.append(round(loss.item(), 4))
        print(f"epoch {epoch}: mean loss {sum(curve[-20:]) / len(curve[-20:]):.4f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    record = {
        "seed": args.seed,
        "level": DEFAULT_LEVEL,
        "problems": args.problems,
        "samples_per_problem": args.samples,
        "solutions": len(data),
        "steps": len(step_labels),
        "positive_step_fraction": round(sum(step_labels) / len(step_labels), 4),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "loss_curve": curve,
        "sampling_seconds": round(sampled_at, 1),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    (args.out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "loss_curve"}))


if __name__ == "__main__":
    main()
