"""FakeContext: the SearchContext verbs over a scripted policy, for strategy tests.

No model and no KV: a branch is its text. `extend` asks the policy for the next step of each
branch's text, so tests decide exactly what every step says (and therefore what the verifiers
score) and run in milliseconds. Tokens are characters (id = code point + 1; id 0 is EOS), so
token counts in the accounting are character counts. The context records every extend call and
the set of live branches, so tests can assert what a strategy asked for and that it released
everything.

A policy is `policy(text_so_far, rng) -> step`: the step's text, ending with the step delimiter,
or with the EOS marker "<eos>" to finish the branch. `extend(..., stop=[])` (no stop strings)
keeps asking the policy until EOS, as the engine generates a whole solution.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Sequence

from ponder.engine.protocol import Branch, SearchContext, SearchStats

EOS_MARKER = "<eos>"
EOS_ID = 0
Policy = Callable[[str, random.Random], str]


class FakeContext(SearchContext):
    def __init__(self, policy: Policy, *, seed: int = 0, max_model_len: int = 4096):
        self.policy = policy
        self.rng = random.Random(seed)
        self.max_model_len = max_model_len
        self.stats = SearchStats()
        self.calls: list[list[str]] = []  # the texts of the branches each extend call got
        self._tokens: dict[int, tuple[int, ...]] = {}
        self._ids = itertools.count()
        self._closed = False

    @property
    def live(self) -> set[int]:
        """Ids of branches not yet released."""
        return set(self._tokens)

    def root(self, prompt: str | Sequence[int]) -> Branch:
        ids = tuple(ord(c) + 1 for c in prompt) if isinstance(prompt, str) else tuple(prompt)
        if not ids:
            raise ValueError("the prompt is empty")
        branch = Branch(next(self._ids), None, len(ids), len(ids))
        self._tokens[branch.id] = ids
        self.stats.prompt_tokens += len(ids)
        self.stats.computed_prompt_tokens += len(ids)
        return branch

    def fork(self, branch: Branch, n: int) -> list[Branch]:
        if n < 1:
            raise ValueError(f"fork needs n >= 1, got {n}")
        tokens = self._get(branch)
        kids = []
        for _ in range(n):
            kid = branch.child(next(self._ids))
            self._tokens[kid.id] = tokens
            kids.append(kid)
        return kids

    async def extend(
        self,
        branches: Sequence[Branch],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
        release_inputs: bool = False,
    ) -> list[Branch]:
        self.stats.extend_calls += 1
        self.calls.append([self.text(b) for b in branches])
        out = []
        for b in branches:
            if b.done:
                raise ValueError(
                    f"branch {b.id} is done ({b.finish_reason}); it cannot be extended"
                )
            step, reason = self._generate(self.text(b), to_eos=stop is not None and not stop)
            new = [ord(c) + 1 for c in step] + ([EOS_ID] if reason == "eos" else [])
            if max_tokens is not None and len(new) > max_tokens:
                new, reason = new[:max_tokens], "length"
            tokens = self._get(b) + tuple(new)
            if len(tokens) >= self.max_model_len:
                tokens, reason = tokens[: self.max_model_len], "max_model_len"
            added = len(tokens) - b.length
            kid = Branch(
                next(self._ids),
                b.id,
                len(tokens),
                b.prompt_length,
                b.cumulative_logprob - 0.1 * added,
                reason,
            )
            self._tokens[kid.id] = tokens
            self.stats.generated_tokens += added
            self.stats.samples += 1
            out.append(kid)
        if release_inputs:
            self.release(branches)
        return out

    def _generate(self, text: str, *, to_eos: bool) -> tuple[str, str]:
        """One policy step, or (stop=[]) steps until EOS as the engine would generate."""
        out = ""
        while True:
            step = self.policy(text + out, self.rng)
            if step.endswith(EOS_MARKER):
                return out + step[: -len(EOS_MARKER)], "eos"
            out += step
            if not to_eos or len(out) >= self.max_model_len:
                return out, "stop"

    def release(self, branches: Iterable[Branch]) -> None:
        for b in branches:
            self._tokens.pop(b.id, None)

    def tokens(self, branch: Branch) -> tuple[int, ...]:
        return self._get(branch)

    def text(self, branch: Branch) -> str:
        return "".join(chr(t - 1) for t in self._get(branch)[branch.prompt_length :] if t != EOS_ID)

    def prompt_text(self, branch: Branch) -> str:
        return "".join(chr(t - 1) for t in self._get(branch)[: branch.prompt_length])

    def close(self) -> None:
        self._tokens.clear()
        self._closed = True

    def _get(self, branch: Branch) -> tuple[int, ...]:
        if self._closed:
            raise RuntimeError("this search context is closed")
        if branch.id not in self._tokens:
            raise ValueError(f"branch {branch.id} is unknown to this context or was released")
        return self._tokens[branch.id]
