"""GrammarState: where a sequence stands in its grammar, one immutable value per position.

The engine sees only this class. A backend (outlines-core, llguidance, xgrammar) supplies a
`Matcher`: `bitmask()` (which tokens may come next) and `advance(token)` (a NEW matcher, or None
if the token is rejected), never mutating itself. So a fork simply shares its parent's state,
as it shares the parent's full KV blocks (copy-on-write: the first token a branch samples makes
its own successor, leaving the shared one untouched), and a preempted sequence keeps its state.

Derived from the mask, the same way for every backend:
- `is_dead`: no token at all may follow (the grammar cannot be completed with this vocabulary);
- `is_complete`: the text matches and only an end-of-sequence token may follow.
It does not sample, stop sequences or know about batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


class Matcher(Protocol):
    def bitmask(self) -> torch.Tensor:
        """(W,) int32 packed mask of the tokens allowed next (see bitmask.py)."""

    def advance(self, token_id: int) -> Matcher | None:
        """The matcher after `token_id`, or None when the grammar rejects it."""


class Grammar(Protocol):
    def start(self) -> Matcher:
        """The matcher before any generated token."""


@dataclass(frozen=True, slots=True)
class CompiledGrammar:
    """A backend's compiled grammar with the vocabulary facts every state needs."""

    grammar: Grammar
    eos_mask: torch.Tensor  # (W,) int32, the end-of-sequence ids
    eos_ids: frozenset[int]
    backend: str
    compile_s: float

    def start(self) -> GrammarState:
        return GrammarState(self.grammar.start(), self)


@dataclass(frozen=True, slots=True, eq=False)
class GrammarState:
    matcher: Matcher
    compiled: CompiledGrammar
    _mask: list = field(default_factory=list, repr=False)  # lazily computed (W,) bitmask

    @property
    def bitmask(self) -> torch.Tensor:
        """(W,) int32: the tokens allowed next; EOS ids are interchangeable."""
        if not self._mask:
            mask = self.matcher.bitmask()
            eos = self.compiled.eos_mask
            if bool((mask & eos).any()):
                mask = mask | eos  # every EOS id ends the text the same way
            self._mask.append(mask)
        return self._mask[0]

    @property
    def is_dead(self) -> bool:
        return not bool(self.bitmask.any())

    @property
    def is_complete(self) -> bool:
        mask, eos = self.bitmask, self.compiled.eos_mask
        return bool((mask & eos).any()) and not bool((mask & ~eos).any())

    def advance(self, token_id: int) -> GrammarState | None:
        """The state after `token_id`; None if the grammar rejects it. An EOS token is a
        no-op (it ends the sequence; the state it ends in is kept)."""
        if token_id in self.compiled.eos_ids:
            return self
        nxt = self.matcher.advance(token_id)
        return None if nxt is None else GrammarState(nxt, self.compiled)
