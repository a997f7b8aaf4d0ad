"""Packed token bitmasks: one bit per token id, 32 ids per int32 word (the layout llguidance,
xgrammar and outlines-core all write), and the pure functions that pack, unpack and apply them.

Row r of a (B, W) bitmask allows token t iff bit t % 32 of word t // 32 is set. Applying sets
every disallowed logit to -inf; a row with no allowed token is left for the caller to handle
(the engine ends such a sequence before it samples again). Nothing here knows a grammar.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

_SHIFTS = torch.arange(32, dtype=torch.int32)


def width(vocab_size: int) -> int:
    """int32 words per row for `vocab_size` tokens."""
    return (vocab_size + 31) // 32


def pack(token_ids: Iterable[int], vocab_size: int) -> torch.Tensor:
    """(W,) int32 bitmask allowing exactly `token_ids` (ids >= vocab_size are dropped)."""
    ids = np.fromiter((t for t in token_ids if 0 <= t < vocab_size), dtype=np.int64)
    words = np.zeros(width(vocab_size), dtype=np.uint32)
    np.bitwise_or.at(words, ids >> 5, (np.uint32(1) << (ids & 31).astype(np.uint32)))
    return torch.from_numpy(words.view(np.int32))


def unpack(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, W) int32 -> (B, V) bool, True where the token is allowed."""
    shifts = _SHIFTS.to(bitmask.device)
    bits = (bitmask[:, :, None] >> shifts) & 1  # (B, W, 32)
    return bits.reshape(bitmask.shape[0], -1)[:, :vocab_size].bool()  # (B, V)


def allowed_ids(row: torch.Tensor, vocab_size: int) -> list[int]:
    """The token ids a (W,) bitmask row allows, ascending."""
    return unpack(row[None], vocab_size)[0].nonzero()[:, 0].tolist()


def apply(logits: torch.Tensor, bitmask: torch.Tensor, rows: list[int]) -> None:
    """In place: logits[rows[i]] keeps only the tokens bitmask[i] allows. logits: (B, V)."""
    allowed = unpack(bitmask, logits.shape[-1]).to(logits.device)  # (len(rows), V)
    index = torch.tensor(rows, device=logits.device)
    logits[index] = logits[index].masked_fill(~allowed, float("-inf"))
