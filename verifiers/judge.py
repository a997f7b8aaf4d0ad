"""LLM-as-judge: a model served by the engine grades each candidate, pointwise.

    LLMJudge(path=".../SmolLM2-135M-Instruct").score(prompts, candidates) -> [[P(yes)], ...]

For every (prompt, candidate) the judge model is asked `template` (the question, the proposed
solution, "Is the proposed solution correct? Answer yes or no."), wrapped in its chat template
when it has one, and one token is sampled greedily with the top-20 logprobs. The score is
P(yes) / (P(yes) + P(no)) over the first answer token, where yes and no are single tokens
looked up in the judge's tokenizer (a missing one is a ValueError naming it). A token outside
the top 20 counts as probability 0; when both are outside, the judge has no opinion and the
score is 0.5. All candidates of a call go to the engine at once, so they batch in its scheduler
(and share the template's prefix blocks).

Any local model the engine can load can judge; a judge sharing the search's engine is fine (the
engine loop is thread-safe, and verifiers run in worker threads).
"""

from __future__ import annotations

import math

from ponder.verifiers.base import check_batch
from ponder.verifiers.reward_model import single_token_id

TEMPLATE = (
    "Question:\n{prompt}\n\nProposed solution:\n{candidate}\n\n"
    "Is the proposed solution correct? Answer yes or no."
)
TOP = 20


class LLMJudge:
    name = "judge"
    process = False

    def __init__(
        self,
        path: str | None = None,
        *,
        engine=None,
        template: str = TEMPLATE,
        yes: str = "yes",
        no: str = "no",
    ):
        from ponder.engine.engine import Engine

        if (path is None) == (engine is None):
            raise ValueError("the judge needs exactly one of path= (a model folder) or engine=")
        if "{prompt}" not in template or "{candidate}" not in template:
            raise ValueError("the judge template needs {prompt} and {candidate} fields")
        self.engine = engine if engine is not None else Engine.from_pretrained(path)
        self.template = template
        self.yes_id = single_token_id(self.engine.tokenizer, yes, "yes token")
        self.no_id = single_token_id(self.engine.tokenizer, no, "no token")

    def _prompt(self, prompt: str, candidate: str):
        text = self.template.format(prompt=prompt, candidate=candidate)
        return self.engine.chat_prompt(text) if self.engine.has_chat_template else text

    def score(self, prompts, candidates, references=None) -> list[list[float]]:
        from ponder.engine.sampling_params import SamplingParams

        check_batch(prompts, candidates, references)
        params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=TOP)
        outputs = self.engine.generate(
            [self._prompt(p, c) for p, c in zip(prompts, candidates, strict=True)], params
        )
        return [
            [yes_probability(o.outputs[0].logprobs[0], self.yes_id, self.no_id)] for o in outputs
        ]


def yes_probability(top: dict, yes_id: int, no_id: int) -> float:
    """P(yes) / (P(yes) + P(no)) from one position's {token id: Logprob}; 0.5 with neither."""
    p_yes = math.exp(top[yes_id].logprob) if yes_id in top else 0.0
    p_no = math.exp(top[no_id].logprob) if no_id in top else 0.0
    return 0.5 if p_yes + p_no == 0.0 else p_yes / (p_yes + p_no)
