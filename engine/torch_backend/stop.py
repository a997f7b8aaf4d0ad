"""StopRule: when a sequence ends (EOS, a stop token, a stop string, its token budget).

Stop strings are checked per new token without detokenising a window every step: a stop string
can only end inside the newest token if that token's text contains the string's last
character. Each token's standalone text is decoded once per decode function and remembered
(`TokenTexts`), so most steps cost a dict lookup; only a token that could end a stop string
pays for the window decode that decides it in context. A token whose standalone text is not
trustworthy (an incomplete UTF-8 sequence decodes to U+FFFD) always gets the full check, and so
does every token when a stop string ends in a space (tokenizers may strip a leading space when
a token is decoded alone). No scheduling or sampling here.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

Decode = Callable[[list[int]], str]


class TokenTexts:
    """Standalone text of each token id under one decode function, decoded on first use."""

    _by_owner: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __init__(self, decode: Decode):
        self.decode = decode
        self.texts: dict[int, str] = {}

    @classmethod
    def of(cls, decode: Decode) -> TokenTexts:
        """The table for `decode`, kept as long as its owner (the bound method's object) lives."""
        owner = getattr(decode, "__self__", decode)
        func = getattr(decode, "__func__", decode)
        try:
            tables = cls._by_owner.setdefault(owner, {})
        except TypeError:  # an owner that takes no weak references: no caching
            return cls(decode)
        table = tables.get(func)
        if table is None:
            table = tables[func] = cls(decode)
        return table

    def text(self, token_id: int) -> str:
        text = self.texts.get(token_id)
        if text is None:
            text = self.texts[token_id] = self.decode([token_id])
        return text


@dataclass(frozen=True, slots=True)
class StopRule:
    max_new_tokens: int
    eos_token_ids: frozenset[int] = frozenset()
    stop_token_ids: frozenset[int] = frozenset()
    stop_strings: tuple[str, ...] = ()

    def check(
        self, new_token_ids: list[int], decode: Decode
    ) -> tuple[str, int | str | None] | None:
        """(finish_reason, stop_reason) once the newest token ends the sequence, else None."""
        last = new_token_ids[-1]
        if last in self.eos_token_ids:
            return "stop", None
        if last in self.stop_token_ids:
            return "stop", last
        if self.stop_strings and self._could_end(last, decode):
            found = self._stop_string_ending_last(new_token_ids, decode)
            if found is not None:
                return "stop", found
        if len(new_token_ids) >= self.max_new_tokens:
            return "length", None
        return None

    def _could_end(self, token_id: int, decode: Decode) -> bool:
        if any(s[-1] == " " for s in self.stop_strings):
            return True
        text = TokenTexts.of(decode).text(token_id)
        return "\ufffd" in text or any(s[-1] in text for s in self.stop_strings)

    def _stop_string_ending_last(self, new_token_ids: list[int], decode: Decode) -> str | None:
        """The slow, exact check: a stop string in the decoded window that was not there before
        the newest token (one that ends inside it spans at most len(s) tokens)."""
        window = max(len(s) for s in self.stop_strings) + 1
        tail = decode(new_token_ids[-window:])
        head = decode(new_token_ids[-window:-1]) if len(new_token_ids) > 1 else ""
        for s in self.stop_strings:
            if s in tail and s not in head:
                return s
        return None
