"""Token masks from outlines-core (the Rust core of outlines): regex -> DFA -> token index.

Everything becomes a regex first (a JSON schema through `build_regex_from_schema`, with compact
whitespace so a model cannot pad forever); `Index` then maps (state, token) -> state for the
whole vocabulary up front. A state is an int, so a matcher is a tiny immutable value and forks
are free; each state's packed mask is computed once and cached on the compiled grammar.
No Lark/EBNF grammars (outlines-core has none): those are a ValueError naming the backends
that take them. JSON schema keywords outside regex reach (minimum/maximum) are not enforced.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from ponder.engine.structured import bitmask
from ponder.engine.structured.params import StructuredOutputsParams
from ponder.engine.structured.patterns import choice_regex
from ponder.engine.structured.vocabulary import TokenTable

WHITESPACE = r"[ ]?"  # between JSON tokens: at most one space
ANY_OBJECT = {"type": "object"}


def to_regex(params: StructuredOutputsParams) -> str:
    from outlines_core.json_schema import build_regex_from_schema

    if params.regex is not None:
        return params.regex
    if params.choice is not None:
        return choice_regex(params.choice)
    if params.json is not None or params.json_object:
        import json

        schema = params.json if params.json is not None else json.dumps(ANY_OBJECT)
        return build_regex_from_schema(schema, WHITESPACE)
    raise ValueError(
        "the outlines backend takes regex, choice, json and json_object; a grammar needs the "
        "llguidance (Lark) or xgrammar (EBNF) backend"
    )


@dataclass(frozen=True, slots=True)
class OutlinesMatcher:
    grammar: OutlinesGrammar
    state: int

    def bitmask(self) -> torch.Tensor:
        return self.grammar.mask_of(self.state)

    def advance(self, token_id: int) -> OutlinesMatcher | None:
        nxt = self.grammar.index.get_next_state(self.state, token_id)
        return None if nxt is None else OutlinesMatcher(self.grammar, nxt)


class OutlinesGrammar:
    def __init__(self, index, vocab_size: int):
        self.index = index
        self.vocab_size = vocab_size
        self._masks: dict[int, torch.Tensor] = {}  # state -> (W,) int32, filled on first use

    def start(self) -> OutlinesMatcher:
        return OutlinesMatcher(self, self.index.get_initial_state())

    def mask_of(self, state: int) -> torch.Tensor:
        mask = self._masks.get(state)
        if mask is None:
            mask = bitmask.pack(self.index.get_allowed_tokens(state), self.vocab_size)
            self._masks[state] = mask
        return mask


class OutlinesBackend:
    name = "outlines"

    def __init__(self, table: TokenTable, tokenizer=None):
        from outlines_core import Vocabulary

        self.table = table
        by_bytes: dict[bytes, list[int]] = {}
        for tid, token in enumerate(table.tokens):
            if tid not in table.special_ids:
                by_bytes.setdefault(token, []).append(tid)
        self.vocabulary = Vocabulary(table.eos_ids[0], by_bytes)

    def compile(self, params: StructuredOutputsParams) -> OutlinesGrammar:
        from outlines_core import Index

        return OutlinesGrammar(Index(to_regex(params), self.vocabulary), self.table.vocab_size)
