"""The two calls the engine core makes for constrained sequences, kept out of the core.

- `apply_masks(logits, seqs)`: before sampling, each constrained row keeps only the tokens its
  grammar state allows (unconstrained rows, and batches without constraints, cost nothing);
- `advance(seq)`: after sampling, move the sequence's state past its new token and say whether
  the grammar ends it: ("stop", None) when the text is complete (only EOS may follow, so the
  forward pass that would sample it is skipped) or at a dead end (no token may follow). A token
  the grammar rejects cannot be sampled under its mask, so it is a broken invariant.

A sequence carries its state in `seq.grammar` (None: unconstrained). Nothing here schedules.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ponder.engine.structured import bitmask


def apply_masks(logits: torch.Tensor, seqs: Sequence) -> None:
    """In place on logits (B, V), row i belonging to seqs[i]."""
    rows = [i for i, seq in enumerate(seqs) if getattr(seq, "grammar", None) is not None]
    if not rows:
        return
    masks = torch.stack([seqs[i].grammar.bitmask for i in rows])  # (R, W)
    bitmask.apply(logits, masks, rows)


def advance(seq) -> tuple[str, None] | None:
    """Advance `seq.grammar` past the last token; a finish verdict, or None to go on."""
    state = seq.grammar
    if state is None:
        return None
    token = seq.token_ids[-1]
    nxt = state.advance(token)
    if nxt is None:
        raise RuntimeError(
            f"sequence {seq.seq_id} sampled token {token}, which its grammar rejects: the mask "
            "was not applied to its logits row"
        )
    seq.grammar = nxt
    if token in nxt.compiled.eos_ids:
        return None  # the stop rule ends it (or not, under ignore_eos)
    if nxt.is_complete or nxt.is_dead:
        return "stop", None
    return None
