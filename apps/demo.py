"""`ponder demo`: sample solutions to held-out arith problems and grade them exactly.

Samples with ponder's engine (all problems and samples in one continuous batch). Prints each
problem with its samples, the exact outcome verdict and the first wrong step, then
returns a summary (pass@1 as the mean over samples, pass@n as any-correct). It is the
out-of-the-box smoke job on the embedded world; `ponder eval` is the real evaluation command.
"""

from __future__ import annotations

from collections.abc import Callable

from ponder.engine.sampling_params import SamplingParams
from ponder.tasks.arith import generate
from ponder.tasks.registry import make_verifier


def run_demo(
    engine,
    *,
    limit: int,
    level: int,
    n: int,
    temperature: float,
    seed: int,
    echo: Callable[[str], None],
) -> dict:
    problems = generate(limit, split="heldout", seed=seed, difficulty=level)
    outcome = make_verifier("arith_outcome")
    steps = make_verifier("arith_step")
    params = SamplingParams(n=n, temperature=temperature, seed=seed, max_tokens=400)
    results = engine.generate([p.prompt for p in problems], params)
    correct_samples = solved = 0
    for problem, result in zip(problems, results, strict=True):
        texts = [c.text for c in result.outputs]
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
