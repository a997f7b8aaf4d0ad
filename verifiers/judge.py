"""LLM-as-judge: a model served by the engine grades each candidate, pointwise.

    LLMJudge(path=".../SmolLM2-135M-Instruct").score(prompts, candidates) -> [[P(yes)], ...]

For every (prompt, candidate) the judge model is asked `template` (the question, the proposed
solution, "Is the proposed solution correct? Answer yes or no."), wrapped in its chat template
when it has one, and one token is sampled greedily with the top-20 logprobs (the raw
distribution, before temperature). The score is P(yes) / (P(yes) + P(no)) over that first
answer token, where P(yes) sums the `yes` spellings (default "yes" and "Yes": chat models
start answers capitalised, and SmolLM2-135M-Instruct puts more mass on "Yes"/"No" than on
"yes"/"no") and P(no) the `no` spellings; each spelling must be a single token of the judge's
tokenizer (else a ValueError naming it). A spelling outside the top 20 counts as probability 0;
when all are outside, the judge has no opinion and the score is 0.5. All candidates of a call
go to the engine at once, so they batch in its scheduler (and share the template's prefix
blocks). Not done: multi-token verdicts, reasoning before the verdict, pairwise judging.

Any local model the engine can load can judge; a judge sharing the search's engine is fine (the
engine loop is thread-safe, and verifiers run in worker threads).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

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
        yes: str | Iterable[str] = ("yes", "Yes"),
        no: str | Iterable[str] = ("no", "No"),
    ):
        from ponder.engine.torch_backend.engine import Engine

        if (path is None) == (engine is None):
            raise ValueError("the judge needs exactly one of path= (a model folder) or engine=")
        if "{prompt}" not in template or "{candidate}" not in template:
            raise ValueError("the judge template needs {prompt} and {candidate} fields")
        self.engine = engine if engine is not None else Engine.from_pretrained(path)
        self.template = template
        self.yes_ids = token_ids(self.engine.tokenizer, yes, "yes token")
        self.no_ids = token_ids(self.engine.tokenizer, no, "no token")

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
            [yes_probability(o.outputs[0].logprobs[0], self.yes_ids, self.no_ids)] for o in outputs
        ]


def token_ids(tokenizer, spellings: str | Iterable[str], role: str) -> tuple[int, ...]:
    """Distinct single-token ids of one verdict's spellings (a plain string is one spelling)."""
    spellings = (spellings,) if isinstance(spellings, str) else tuple(spellings)
    if not spellings:
        raise ValueError(f"the judge needs at least one {role} spelling")
    return tuple(dict.fromkeys(single_token_id(tokenizer, s, role) for s in spellings))


def yes_probability(top: dict, yes_ids: Iterable[int], no_ids: Iterable[int]) -> float:
    """P(yes) / (P(yes) + P(no)) from one position's {token id: Logprob}, each side summed over
    its ids; a token absent from `top` counts 0, and with nothing of either side it is 0.5."""
    p_yes = sum(math.exp(top[i].logprob) for i in yes_ids if i in top)
    p_no = sum(math.exp(top[i].logprob) for i in no_ids if i in top)
    return 0.5 if p_yes + p_no == 0.0 else p_yes / (p_yes + p_no)
