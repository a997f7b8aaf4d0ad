"""Token masks from llguidance: an Earley parser over a lexer, masks computed per step.

Takes every constraint kind natively: JSON schema (with numeric ranges, enums, nested objects),
regex, choice (as a regex) and Lark grammars. The tokenizer comes from ponder's TokenTable (so
the embedded character-level tokenizer works, which `llguidance.hf.from_tokenizer` rejects).
An `LLMatcher` is mutable, so `advance` deep-copies before consuming: matchers stay immutable
values that forks can share. Compilation errors (llguidance never raises for them) become
ValueError.
"""

from __future__ import annotations

import torch
from ponder.engine.structured.params import StructuredOutputsParams
from ponder.engine.structured.patterns import choice_regex
from ponder.engine.structured.vocabulary import TokenTable


class _Tokens:
    """The duck-typed tokenizer `llguidance.TokenizerWrapper` reads."""

    def __init__(self, table: TokenTable, tokenizer):
        self.eos_token_id = table.eos_ids[0]
        self.bos_token_id = getattr(tokenizer, "bos_token_id", None)
        # llguidance marks special tokens by a leading 0xFF byte.
        self.tokens = [
            b"\xff<special_%d>" % i if i in table.special_ids else tok
            for i, tok in enumerate(table.tokens)
        ]
        self.special_token_ids = sorted(table.special_ids)
        self._tokenizer = tokenizer

    def __call__(self, text) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return list(self._tokenizer(text, add_special_tokens=False).input_ids)


# Compact JSON (", " and ": " separators, no other whitespace): with llguidance's default
# flexible whitespace a weak model pads with spaces and newlines until max_tokens.
COMPACT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def to_grammar(params: StructuredOutputsParams) -> str:
    from llguidance import LLMatcher

    kind = params.kind
    if kind == "json":
        return LLMatcher.grammar_from_json_schema(params.json, overrides=COMPACT)
    if kind == "json_object":
        return LLMatcher.grammar_from_json_schema({"type": "object"}, overrides=COMPACT)
    if kind == "regex":
        return LLMatcher.grammar_from_regex(params.regex)
    if kind == "choice":
        return LLMatcher.grammar_from_regex(choice_regex(params.choice))
    return LLMatcher.grammar_from_lark(params.grammar)


class LLGuidanceMatcher:
    __slots__ = ("matcher", "width")

    def __init__(self, matcher, width: int):
        self.matcher, self.width = matcher, width

    def bitmask(self) -> torch.Tensor:
        out = torch.zeros(self.width, dtype=torch.int32)
        self.matcher.unsafe_compute_mask_ptr(out.data_ptr(), self.width * 4)
        return out

    def advance(self, token_id: int) -> LLGuidanceMatcher | None:
        nxt = self.matcher.deep_copy()
        if not nxt.consume_token(token_id) or nxt.is_error():
            return None
        return LLGuidanceMatcher(nxt, self.width)


class LLGuidanceGrammar:
    def __init__(self, tokenizer, grammar: str, width: int):
        from llguidance import LLMatcher

        self.tokenizer, self.grammar, self.width = tokenizer, grammar, width
        probe = LLMatcher(tokenizer, grammar, log_level=0)
        if probe.is_error():
            raise ValueError(f"llguidance rejects the constraint: {probe.get_error()}")
        self._first = probe

    def start(self) -> LLGuidanceMatcher:
        return LLGuidanceMatcher(self._first.deep_copy(), self.width)


class LLGuidanceBackend:
    name = "llguidance"

    def __init__(self, table: TokenTable, tokenizer):
        from llguidance import LLTokenizer, TokenizerWrapper

        self.table = table
        wrapper = TokenizerWrapper(_Tokens(table, tokenizer))
        self.tokenizer = LLTokenizer(wrapper, n_vocab=table.vocab_size, eos_token=table.eos_ids[0])

    def compile(self, params: StructuredOutputsParams) -> LLGuidanceGrammar:
        return LLGuidanceGrammar(self.tokenizer, to_grammar(params), self.table.bitmask_width)
