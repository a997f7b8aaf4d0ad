"""TokenTable: the bytes each token id stands for, read from a local Hugging Face tokenizer.

Every grammar library needs the same thing: for each id below the model's vocabulary size, the
exact bytes the token adds to the text, plus which ids are special (never part of a match) and
which end a sequence. This builds that once, offline, from `tokenizer.get_vocab()` (never the
hub), so each backend gets the same view of the vocabulary:

- byte-level BPE (GPT-2, Llama 3, SmolLM2): token strings are bytes mapped to printable
  characters (`Ġ` is a space); the mapping is inverted;
- SentencePiece (`▁` for a space, `<0x0A>` byte fallback): both are undone;
- anything else (the embedded character-level tokenizer): the token string's UTF-8 bytes.

Ids the tokenizer does not define (a model's padded vocabulary) are special: never allowed.
It does not compile grammars or know any grammar library.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache

_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """GPT-2's byte-to-printable-character table, inverted."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _decoder_kind(tokenizer) -> str:
    """'byte_level', 'sentencepiece' or 'plain', from the fast tokenizer's decoder."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return "plain"
    decoder = json.dumps(json.loads(backend.to_str()).get("decoder"))
    if "ByteLevel" in decoder:
        return "byte_level"
    if "Metaspace" in decoder or "ByteFallback" in decoder or "\u2581" in decoder:
        return "sentencepiece"
    return "plain"


def _token_bytes(token: str, kind: str) -> bytes:
    if kind == "byte_level":
        table = _unicode_to_byte()
        if all(ch in table for ch in token):
            return bytes(table[ch] for ch in token)
        return token.encode()
    if kind == "sentencepiece":
        fallback = _BYTE_FALLBACK.match(token)
        if fallback:
            return bytes([int(fallback.group(1), 16)])
        return token.replace("\u2581", " ").encode()
    return token.encode()


@dataclass(frozen=True, slots=True)
class TokenTable:
    tokens: tuple[bytes, ...]  # index = token id; b"" for special or undefined ids
    special_ids: frozenset[int]
    eos_ids: tuple[int, ...]  # the first one is the tokenizer's own EOS

    def __post_init__(self) -> None:
        if not self.eos_ids:
            raise ValueError("TokenTable: a constrained model needs at least one EOS token id")
        bad = [i for i in self.eos_ids if not 0 <= i < len(self.tokens)]
        if bad:
            raise ValueError(f"TokenTable: EOS ids {bad} are outside the vocabulary")

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def bitmask_width(self) -> int:
        """int32 words per row of a packed token bitmask."""
        return (self.vocab_size + 31) // 32

    @classmethod
    def from_tokenizer(cls, tokenizer, vocab_size: int, eos_ids) -> TokenTable:
        """The table of a local HF tokenizer, padded (or cut) to the model's `vocab_size`."""
        kind = _decoder_kind(tokenizer)
        special = set(getattr(tokenizer, "all_special_ids", []))
        for tid, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
            if getattr(added, "special", False):
                special.add(tid)
        tokens = [b""] * vocab_size
        defined = set()
        for token, tid in tokenizer.get_vocab().items():
            if 0 <= tid < vocab_size and tid not in special:
                tokens[tid] = _token_bytes(token, kind)
                defined.add(tid)
        special |= {i for i in range(vocab_size) if i not in defined or not tokens[i]}
        primary = getattr(tokenizer, "eos_token_id", None)
        ordered = ([primary] if primary is not None else []) + sorted(set(eos_ids) - {primary})
        return cls(tuple(tokens), frozenset(special), tuple(ordered))
