"""`ponder demo`: sample solutions to held-out arith problems and grade them exactly.

Prints each problem with its samples, the exact outcome verdict and the first wrong step, then
returns a summary (pass@1 as the mean over samples, pass@n as any-correct). It is the
out-of-the-box smoke job on the embedded world; `ponder eval` is the real evaluation command.
"""

from __future__ import annotations

from collections.abc import Callable

from ponder.engine.reference import ReferenceDecoder
from ponder.tasks.arith import embedded_model_path, generate
from ponder.verifiers import make_verifier


def run_demo(
    *,
    limit: int,
    level: int,
    n: int,
    temperature: float,
    seed: int,
    model_path: str | None,
    echo: Callable[[str], None],
) -> dict:
    problems = generate(limit, split="heldout", seed=seed, difficulty=level)
    decoder = ReferenceDecoder(model_path or embedded_model_path())
    outcome = make_verifier("arith_outcome")
    steps = make_verifier("arith_step")
    samples = decoder.sample(
        [p.prompt for p in problems], n=n, temperature=temperature, seed=seed, batch_size=8
    )
    correct_samples = solved = 0
    for problem, group in zip(problems, samples, strict=True):
        texts = [s.text for s in group]
        prompts = [problem.prompt] * len(texts)
        verdicts = [scores[0] for scores in outcome.score(prompts, texts)]
        step_scores = steps.score(prompts, texts)
        echo(f"\n{problem.prompt.strip()}   (answer {problem.answer})")
        for text, verdict, per_step in zip(texts, verdicts, step_scores, strict=True):
            first_bad = next((i for i, s in enumerate(per_step) if s < 1.0), None)
            mark = "ok " if verdict == 1.0 else "bad"
            where = "" if first_bad is None else f"  (first wrong step: {first_bad + 1})"
            echo(f"  [{mark}] {text.replace(chr(10), ' | ')}{where}")
        correct_samples += sum(v == 1.0 for v in verdicts)
        solved += any(v == 1.0 for v in verdicts)
    total = len(problems)
    return {
        "problems": total,
        "samples_per_problem": n,
        "level": level,
        "pass@1": round(correct_samples / (total * n), 4),
        f"pass@{n}": round(solved / total, 4),
    }
