"""GrammarCompiler: one engine's constraint compiler, with a backend registry and a cache.

    compiler = GrammarCompiler(tokenizer, vocab_size=V, eos_ids={2})     # cheap: builds nothing
    compiled = compiler.compile(StructuredOutputsParams(regex=r"[0-9]+"))  # ValueError if bad
    state = compiled.start()                                               # a GrammarState

The vocabulary table and the backend are built on first use and compiled grammars are cached
by their params, so a search that opens many contexts with one constraint compiles it once.
Callers compile on their own thread (at submission), never on the engine loop; a lock makes the
cache safe to share. Backends register in the plain `BACKENDS` dict; `DEFAULT_BACKEND` was
chosen by bench/structured.py (bench/results/structured.json): llguidance and xgrammar
validated 100% of JSON samples on all four test schemas, outlines-core 0% on integer ranges
and 31% on the nested one (its schema regexes ignore minimum/maximum); llguidance is 7 MB
with Lark grammars, xgrammar pulls triton (+1 GB), so llguidance is the default.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from ponder.engine.structured import bitmask
from ponder.engine.structured.params import StructuredOutputsParams
from ponder.engine.structured.state import CompiledGrammar
from ponder.engine.structured.vocabulary import TokenTable


def _outlines(table, tokenizer):
    from ponder.engine.structured.outlines_backend import OutlinesBackend

    return OutlinesBackend(table, tokenizer)


def _llguidance(table, tokenizer):
    from ponder.engine.structured.llguidance_backend import LLGuidanceBackend

    return LLGuidanceBackend(table, tokenizer)


def _xgrammar(table, tokenizer):
    from ponder.engine.structured.xgrammar_backend import XGrammarBackend

    return XGrammarBackend(table, tokenizer)


BACKENDS: dict[str, Callable] = {
    "outlines": _outlines,
    "llguidance": _llguidance,
    "xgrammar": _xgrammar,
}
DEFAULT_BACKEND = "llguidance"
PACKAGES = {"outlines": "outlines-core", "llguidance": "llguidance", "xgrammar": "xgrammar"}


class GrammarCompiler:
    def __init__(
        self,
        tokenizer,
        *,
        vocab_size: int,
        eos_ids: Iterable[int],
        backend: str = DEFAULT_BACKEND,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"unknown structured backend {backend!r}; known: {sorted(BACKENDS)}")
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.eos_ids = tuple(eos_ids)
        self.backend_name = backend
        self._backend = None
        self._table: TokenTable | None = None
        self._cache: dict[StructuredOutputsParams, CompiledGrammar] = {}
        self._lock = threading.Lock()

    @property
    def table(self) -> TokenTable:
        if self._table is None:
            self._table = TokenTable.from_tokenizer(self.tokenizer, self.vocab_size, self.eos_ids)
        return self._table

    def compile(self, params: StructuredOutputsParams) -> CompiledGrammar:
        """The compiled constraint (cached); ValueError when the backend cannot compile it."""
        with self._lock:
            cached = self._cache.get(params)
            if cached is not None:
                return cached
            backend = self._load_backend()
            start = time.perf_counter()
            try:
                grammar = backend.compile(params)
            except ValueError as exc:
                raise ValueError(f"structured outputs ({self.backend_name}): {exc}") from None
            table = self.table
            compiled = CompiledGrammar(
                grammar,
                eos_mask=bitmask.pack(table.eos_ids, table.vocab_size),
                eos_ids=frozenset(table.eos_ids),
                backend=self.backend_name,
                compile_s=time.perf_counter() - start,
            )
            if compiled.start().is_dead:
                raise ValueError(
                    f"structured outputs ({self.backend_name}): no token of this vocabulary "
                    f"can start a match of {params}"
                )
            self._cache[params] = compiled
            return compiled

    def _load_backend(self):
        if self._backend is None:
            try:
                self._backend = BACKENDS[self.backend_name](self.table, self.tokenizer)
            except ImportError as exc:
                package = PACKAGES[self.backend_name]
                raise ValueError(
                    f"structured backend {self.backend_name!r} needs `pip install {package}` "
                    f"(or ponder[structured]): {exc}"
                ) from None
        return self._backend
