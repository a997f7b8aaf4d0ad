"""InFlight: the draws and prefills the engine core has started and not finished, by owner.

It turns accepted draws into scheduled sequences (`start_draw`, `start_prefill`) and takes them
back out for an owner's cancel, release or close, or for an engine failure (`fail_all`). Each
reply is resolved exactly once: by the core when its sequence finishes, or here when it is
cancelled or failed. It does not step the model or deliver results (engine/torch_backend/core.py
does). Only the engine loop's thread touches it.
"""

from __future__ import annotations

import itertools

from ponder.engine.torch_backend import commands as cmd
from ponder.engine.torch_backend.handles import Handle, HandleTable, Pending, Prefill
from ponder.engine.torch_backend.kv_cache import BlockManager
from ponder.engine.torch_backend.outcome import Tally
from ponder.engine.torch_backend.sampling import RowParams
from ponder.engine.torch_backend.scheduler import Scheduler
from ponder.engine.torch_backend.sequence import Sequence, StopRule


class InFlight:
    def __init__(
        self,
        scheduler: Scheduler,
        handles: HandleTable,
        blocks: BlockManager,
    ):
        self.scheduler = scheduler
        self.handles = handles
        self.blocks = blocks
        self.draws: dict[int, tuple[Sequence, Pending]] = {}  # child handle id -> in flight
        self.prefills: dict[int, Prefill] = {}  # prefill seq id -> prefill
        self.unreported: dict[int, Tally] = {}  # owner -> prefill accounting not yet reported
        self._seq_ids = itertools.count()

    def __len__(self) -> int:
        return len(self.draws) + len(self.prefills)

    # ------------------------------------------------------------------ start

    def start_prefill(self, handle_id: int, handle: Handle) -> Prefill:
        seq = Sequence(
            seq_id=next(self._seq_ids),
            token_ids=list(handle.token_ids[:-1]),  # each draw computes the last token itself
            stop=StopRule(max_new_tokens=0),
            params=RowParams(1.0, 0, 1.0, 0.0),
            owner=handle.owner,
            computes_prompt=True,
            recomputes_prompt=handle.evicted,
        )
        prefill = Prefill(seq, handle.token_ids, handle.grammar, members={handle_id})
        handle.prefill = prefill
        self.prefills[seq.seq_id] = prefill
        self.scheduler.add(seq)
        return prefill

    def start_draw(self, pending: Pending, source: Handle, take: bool = False) -> None:
        """A sequence continuing `source`, sharing its blocks (`take`: moving them)."""
        draw = pending.draw
        table = source.block_table if take else self.blocks.fork(source.block_table)
        seq = Sequence(
            seq_id=next(self._seq_ids),
            token_ids=list(source.token_ids),
            stop=draw.stop,
            params=draw.params,
            seed=draw.seed,
            num_computed=source.num_computed,
            block_table=table,
            num_top_logprobs=draw.num_top_logprobs,
            owner=pending.owner,
            child=draw.child,
            num_hashed_blocks=source.num_hashed_blocks,
            computes_prompt=source.needs_prefill,
            recomputes_prompt=source.evicted and source.needs_prefill,
            grammar=source.grammar,
        )
        self.draws[draw.child] = (seq, pending)
        self.scheduler.add(seq)

    # ------------------------------------------------------------------ take back

    def abort_prefill(self, prefill: Prefill) -> None:
        self.prefills.pop(prefill.seq.seq_id, None)
        self.scheduler.abort(prefill.seq)
        self.handles.fail_prefill(prefill)

    def release(self, owner: int, handle_ids) -> None:
        for handle_id in handle_ids:
            prefill = self.handles.release(handle_id, owner)
            if prefill is not None:  # nobody wants its KV any more
                self.abort_prefill(prefill)

    def cancel(self, owner: int, children: set[int], why: str = "the draw was cancelled") -> None:
        """Abort those draws of the owner wherever they are (running, waiting or parked on a
        prefill), failing each reply with `why`; release those that finished first."""
        for child in children:
            record = self.draws.get(child)
            if record is not None and record[1].owner == owner:
                del self.draws[child]
                cmd.resolve(record[1].draw.reply, error=RuntimeError(why))
                self.scheduler.abort(record[0])
        self._unpark(lambda p: p.owner == owner and p.draw.child in children, why)
        self.release(owner, children)  # those that finished before the cancel arrived

    def close_owner(self, owner: int) -> None:
        why = "the search context was closed while this draw ran"
        self.cancel(owner, {c for c, (_, p) in self.draws.items() if p.owner == owner}, why)
        self._unpark(lambda p: p.owner == owner, why)
        self.release(owner, self.handles.of_owner(owner))
        for prefill in list(self.prefills.values()):
            if not prefill.wanted:
                self.abort_prefill(prefill)
        self.unreported.pop(owner, None)

    def _unpark(self, drop, why: str) -> None:
        """Take the parked draws `drop` selects off their prefills, failing each reply (its
        caller may still be waiting: a context closed while its extend ran), and abort a
        prefill nobody wants any more."""
        for prefill in list(self.prefills.values()):
            kept = []
            for pending in prefill.parked:
                if drop(pending):
                    cmd.resolve(pending.draw.reply, error=RuntimeError(why))
                else:
                    kept.append(pending)
            prefill.parked = kept
            if not prefill.wanted:
                self.abort_prefill(prefill)

    def fail_all(self, exc: BaseException) -> None:
        """A step raised (a bug) or the engine closes: fail everything in flight, free its
        blocks, keep the handles (their owners release them). Every reply is resolved before
        any block is freed, so if the pool's state is what broke (a free that raises again),
        no caller waits forever."""
        draws, prefills = list(self.draws.values()), list(self.prefills.values())
        self.draws.clear()
        for _, pending in draws:
            cmd.resolve(pending.draw.reply, error=exc)
        for prefill in prefills:
            for pending in prefill.parked:
                cmd.resolve(pending.draw.reply, error=exc)
            prefill.parked.clear()
        for seq, _ in draws:
            self.scheduler.abort(seq)
        for prefill in prefills:
            self.abort_prefill(prefill)
