"""Token masks from xgrammar: a pushdown automaton with per-state precomputed token classes.

Takes JSON schema, regex, choice (as a regex) and EBNF grammars. The tokenizer is built from
ponder's TokenTable as a raw byte vocabulary. `GrammarMatcher.fork()` gives forks their own
matcher; `advance` forks before accepting, so matchers stay immutable values. Optional: the
wheel pulls triton (+1 GB), which must be uninstalled on CPU-only machines.
"""

from __future__ import annotations

import torch
from ponder.engine.structured.params import StructuredOutputsParams
from ponder.engine.structured.patterns import choice_regex
from ponder.engine.structured.vocabulary import TokenTable


class XGrammarMatcher:
    __slots__ = ("matcher", "vocab_size")

    def __init__(self, matcher, vocab_size: int):
        self.matcher, self.vocab_size = matcher, vocab_size

    def bitmask(self) -> torch.Tensor:
        import xgrammar

        out = xgrammar.allocate_token_bitmask(1, self.vocab_size)
        self.matcher.fill_next_token_bitmask(out, 0)
        return out[0]

    def advance(self, token_id: int) -> XGrammarMatcher | None:
        nxt = self.matcher.fork()
        if not nxt.accept_token(token_id):
            return None
        return XGrammarMatcher(nxt, self.vocab_size)


class XGrammarGrammar:
    def __init__(self, compiled, vocab_size: int):
        self.compiled, self.vocab_size = compiled, vocab_size

    def start(self) -> XGrammarMatcher:
        import xgrammar

        return XGrammarMatcher(xgrammar.GrammarMatcher(self.compiled), self.vocab_size)


class XGrammarBackend:
    name = "xgrammar"

    def __init__(self, table: TokenTable, tokenizer=None):
        import xgrammar

        self.table = table
        vocab = [b"" if i in table.special_ids else tok for i, tok in enumerate(table.tokens)]
        info = xgrammar.TokenizerInfo(
            vocab,
            vocab_type=xgrammar.VocabType.RAW,
            vocab_size=table.vocab_size,
            stop_token_ids=list(table.eos_ids),
        )
        self.compiler = xgrammar.GrammarCompiler(info, max_threads=1)

    def compile(self, params: StructuredOutputsParams) -> XGrammarGrammar:
        kind = params.kind
        try:
            if kind == "json":
                compiled = self.compiler.compile_json_schema(params.json, any_whitespace=False)
            elif kind == "json_object":
                compiled = self.compiler.compile_json_schema(
                    '{"type": "object"}', any_whitespace=False
                )
            elif kind in ("regex", "choice"):
                regex = params.regex if kind == "regex" else choice_regex(params.choice)
                compiled = self.compiler.compile_regex(regex)
            else:
                compiled = self.compiler.compile_grammar(params.grammar)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"xgrammar rejects the constraint: {exc}") from None
        return XGrammarGrammar(compiled, self.table.vocab_size)
