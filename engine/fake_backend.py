"""FakeContext: the SearchContext verbs over a scripted policy, for strategy tests.

No model and no KV: a branch is its text. `extend` asks the policy for the next step of each
branch's text, so tests decide exactly what every step says (and therefore what the verifiers
score) and run in milliseconds. Tokens are characters (id = code point + 1; id 0 is EOS), so
token counts in the accounting are character counts. The context records every extend call and
the set of live branches, so tests can assert what a strategy asked for and that it released
everything.

A policy is `policy(text_so_far, rng) -> step`: the step's text, ending with the step delimiter,
or with the EOS marker "<eos>" to finish the branch. `extend` follows the protocol's stop
semantics (ponder.engine.protocol): it keeps asking the policy until EOS, max_tokens, the
context end, or (with stop strings) until the new text contains one of them, cut just after it.
`stop=None` means the context's default `stop` (none by default: until EOS), exactly as on the
engine. Every policy step yields to the event loop, so an extend can be cancelled mid-way as on
a real backend (cancelling releases nothing the caller held).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable, Iterable, Sequence

from ponder.engine.protocol import Branch, SearchContext, SearchStats
from ponder.engine.sampling_params import check_stop_strings

EOS_MARKER = "<eos>"
EOS_ID = 0
Policy = Callable[[str, random.Random], str]


class FakeContext(SearchContext):
    def __init__(
        self,
        policy: Policy,
        *,
        seed: int = 0,
        max_model_len: int = 4096,
        stop: Sequence[str] = (),
        max_tokens: int = 4096,
    ):
        self.policy = policy
        self.stop = check_stop_strings(stop)  # the default of extend(stop=None)
        self.max_tokens = max_tokens  # the default of extend(max_tokens=None)
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
        self._check_open()
        ids = tuple(ord(c) + 1 for c in prompt) if isinstance(prompt, str) else tuple(prompt)
        if not ids:
            raise ValueError("the prompt is empty")
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            raise ValueError(f"prompt token ids must be ints, got {ids[:5]!r}")
        branch = Branch(next(self._ids), None, len(ids), len(ids))
        self._tokens[branch.id] = ids
        self.stats.prompt_tokens += len(ids)
        self.stats.computed_prompt_tokens += len(ids)
        return branch

    def fork(self, branch: Branch, n: int) -> list[Branch]:
        if type(n) is not int or n < 1:
            raise ValueError(f"fork needs an int n >= 1, got {n!r}")
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
        branches = list(branches)
        for b in branches:
            self._get(b)
            if b.done:
                raise ValueError(
                    f"branch {b.id} is done ({b.finish_reason}); it cannot be extended"
                )
        if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
            raise ValueError(f"max_tokens must be an int >= 1 or None, got {max_tokens!r}")
        stops = self.stop if stop is None else check_stop_strings(stop, "extend(stop=...)")
        budget = self.max_tokens if max_tokens is None else max_tokens
        self.stats.extend_calls += 1
        self.calls.append([self.text(b) for b in branches])
        out = []
        for b in branches:
            tokens, reason = await self._generate(b, stops, budget)
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
        self.stats.latency_steps += 1
        if release_inputs:
            self.release(branches)
        return out

    async def _generate(
        self, branch: Branch, stops: tuple[str, ...], budget: int
    ) -> tuple[tuple[int, ...], str]:
        """Policy steps until EOS, a stop string, the budget or the context end."""
        text, out = self.text(branch), ""
        reason = None
        while reason is None:
            await asyncio.sleep(0)  # a real backend's await: cancellable here
            step = self.policy(text + out, self.rng)
            eos = step.endswith(EOS_MARKER)
            out += step[: -len(EOS_MARKER)] if eos else step
            hits = [out.find(s) + len(s) for s in stops if s in out]
            if hits:
                out, reason = out[: min(hits)], "stop"
            elif eos:
                reason = "eos"
            elif len(out) >= budget or len(text) + len(out) >= self.max_model_len:
                reason = "length"  # corrected below to max_model_len when the context is full
        new = [ord(c) + 1 for c in out] + ([EOS_ID] if reason == "eos" else [])
        if len(new) > budget:
            new, reason = new[:budget], "length"
        tokens = self._get(branch) + tuple(new)
        if len(tokens) >= self.max_model_len:
            tokens, reason = tokens[: self.max_model_len], "max_model_len"
        return tokens, reason

    def release(self, branches: Iterable[Branch]) -> None:
        for b in branches:
            self._tokens.pop(b.id, None)

    def live_branches(self) -> int:
        return len(self._tokens)

    def tokens(self, branch: Branch) -> tuple[int, ...]:
        return self._get(branch)

    def text(self, branch: Branch) -> str:
        return "".join(chr(t - 1) for t in self._get(branch)[branch.prompt_length :] if t != EOS_ID)

    def prompt_text(self, branch: Branch) -> str:
        return "".join(chr(t - 1) for t in self._get(branch)[: branch.prompt_length])

    def close(self) -> None:
        self._tokens.clear()
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this search context is closed")

    def _get(self, branch: Branch) -> tuple[int, ...]:
        self._check_open()
        if branch.id not in self._tokens:
            raise ValueError(f"branch {branch.id} is unknown to this context or was released")
        return self._tokens[branch.id]
