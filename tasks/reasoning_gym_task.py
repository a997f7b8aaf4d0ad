"""reasoning-gym's procedural problems as a chat task (the `reasoning_gym` package, offline).

    get_task("reasoning_gym", dataset="gsm_symbolic").items(limit=50, seed=0)

`dataset` names one of reasoning-gym's generators (e.g. `gsm_symbolic`, `basic_arithmetic`,
`chain_sum`); extra generator settings are not exposed. `items(limit, seed)` is deterministic;
for generators that seed each index from the dataset seed (these three do; tested) a larger limit
extends a smaller one.

The prompt is the math tasks' instruction (tasks/math_data.py: step-by-step reasoning, then a last
line "The answer is N.") followed by the generator's question. The final answer is read as in the
math tasks (last `\\boxed{}`, else `####`, else the number after "The answer is"); for answers
that are not numbers, the rest of the last "The answer is ..." line is taken. A prediction is
correct when reasoning-gym's own `score_answer` gives it full marks (1.0; partial credit counts
as wrong) or math-verify finds it equivalent to the reference. The default verifier is
`math_equiv`, an oracle that reads the reference answer: for real selection pass a reward model
(`--verifier orm ...`) or use majority voting. Generators whose answers are not short strings
(grids, programs) are not excluded, but the extraction above is not meant for them.
"""

from __future__ import annotations

import re

from ponder.tasks.base import Item, Task
from ponder.tasks.math_data import INSTRUCTION
from ponder.verifiers.math_answer import answers_equal, extract_math_answer

_ANSWER_LINE = re.compile(r"answer is[:\s]*(.+)", re.IGNORECASE)


def extract_gym_answer(text: str) -> str | None:
    """A math answer when there is one, else the rest of the last "The answer is ..." line."""
    found = extract_math_answer(text)
    if found is not None:
        return found
    lines = _ANSWER_LINE.findall(text)
    answer = lines[-1].strip().rstrip(".").strip() if lines else ""
    return answer or None


class ReasoningGymTask(Task):
    name = "reasoning_gym"
    outcome_verifier = "math_equiv"
    process_verifier = None
    chat = True
    max_steps = 16
    max_step_tokens = 64

    def __init__(self, dataset: str = "gsm_symbolic"):
        try:
            import reasoning_gym
        except ImportError:
            raise ValueError(
                "the reasoning_gym task needs the reasoning-gym package: "
                "pip install reasoning-gym==0.1.25"
            ) from None
        known = reasoning_gym.factory.DATASETS
        if dataset not in known:
            raise ValueError(f"unknown reasoning-gym dataset {dataset!r}; known: {sorted(known)}")
        self.dataset = dataset
        self._create = reasoning_gym.create_dataset
        self._gyms: dict[int, object] = {}  # seed -> generator, for score_answer

    def _gym(self, seed: int, size: int):
        gym = self._gyms.get(seed)
        if gym is None or len(gym) < size:
            gym = self._gyms[seed] = self._create(self.dataset, seed=seed, size=size)
        return gym

    def items(self, limit: int, seed: int) -> list[Item]:
        gym = self._gym(seed, limit)
        items = []
        for i in range(limit):
            entry = gym[i]
            answer = str(entry["answer"])
            meta = {"seed": seed, "index": i}
            item_id = f"rg-{self.dataset}-{seed}-{i}"
            prompt = INSTRUCTION + entry["question"]
            items.append(Item(item_id, prompt, answer, reference=answer, meta=meta))
        return items

    def extract_answer(self, text: str) -> str | None:
        return extract_gym_answer(text)

    def is_correct(self, item: Item, predicted: str | None) -> bool:
        if predicted is None:
            return False
        gym = self._gym(item.meta["seed"], item.meta["index"] + 1)
        entry = gym[item.meta["index"]]
        return gym.score_answer(predicted, entry) == 1.0 or answers_equal(predicted, item.answer)
