"""Commands: the typed messages callers post to the engine loop, and what comes back.

The engine core is the one owner of every block table (engine/torch_backend/handles.py). A
caller never touches a table; it names branches by handle id (an int the caller allocates, so
`fork` can return at once) and posts one of these commands. Commands run in the order they were
posted, between steps, on the loop thread:

    NewRoot(owner, handle, token_ids, grammar)   a branch of prompt tokens, no KV yet
    Fork(owner, source, handles)          handles sharing the source's KV (ref counts +1)
    Release(owner, handles)               idempotent; frees what only those handles held
    Extend(owner, draws, release_inputs)  one continuation per Draw, each becoming a new handle
    Cancel(owner, children)               abort those draws wherever they are; release results
    CloseOwner(owner)                     cancel and release everything the owner holds
    Snapshot / ResetPrefixCache / UpdateWeights   engine-level queries and maintenance

A reply future is created already running (`reply_future`), so a caller that cancels its await
(asyncio.wrap_future cancels the wrapped future) can never make the loop's `set_result` raise:
the loop thread does not die from a caller's action. Nothing here imports torch.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ponder.engine.torch_backend.sampling import RowParams
from ponder.engine.torch_backend.sequence import StopRule

if TYPE_CHECKING:
    from ponder.engine.structured.state import GrammarState


def reply_future() -> Future:
    """A Future that cannot be cancelled: only the loop resolves it."""
    future: Future = Future()
    future.set_running_or_notify_cancel()
    return future


def resolve(future: Future | None, value: Any = None, error: BaseException | None = None) -> None:
    """Set a reply once; a second resolution (a bug) is ignored instead of killing the loop."""
    if future is None or future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class Sink(Protocol):
    """Where a streaming request's tokens go as they are sampled (called on the loop thread;
    it must only hand the delta over, e.g. `loop.call_soon_threadsafe(queue.put_nowait, d)`)."""

    def push(self, delta: TokenDelta) -> None: ...


@dataclass(frozen=True, slots=True)
class TokenDelta:
    child: int  # the handle id the draw will become
    token_ids: tuple[int, ...]  # tokens sampled this step
    logprobs: tuple[float, ...]
    finish_reason: str | None  # set on the last delta of the draw
    stop_reason: int | str | None = None  # the stop string or token id, on the last delta


@dataclass(frozen=True, slots=True)
class Draw:
    """One continuation to sample from handle `parent`; its result becomes handle `child`."""

    parent: int
    child: int
    stop: StopRule
    params: RowParams
    seed: int | None  # its random stream (engine/torch_backend/sampling.py); None: greedy
    num_top_logprobs: int = 0
    reply: Future = field(default_factory=reply_future)  # -> Continuation


@dataclass(frozen=True, slots=True)
class Continuation:
    """What a finished draw returns: its new tokens and its accounting."""

    child: int
    new_token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    top_logprobs: tuple[dict[int, float], ...]
    finish_reason: str  # the protocol vocabulary (ponder.engine.protocol.FINISH_REASONS)
    stop_reason: int | str | None
    cached_prompt_tokens: int  # prefix-cache hits (this draw's and its owner's prefills)
    computed_prompt_tokens: int  # prompt tokens computed for the first time
    recomputed_tokens: int  # context tokens computed again (preemption)
    queue_seconds: float  # submission -> first scheduled
    latency_steps: int  # engine steps from submission to finish


@dataclass(frozen=True, slots=True)
class NewRoot:
    owner: int
    handle: int
    token_ids: tuple[int, ...]
    # Constrained decoding: the grammar's start state (immutable; every draw continuing this
    # root or a fork of it starts from it). None: unconstrained.
    grammar: GrammarState | None = None


@dataclass(frozen=True, slots=True)
class Fork:
    owner: int
    source: int
    handles: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Release:
    owner: int
    handles: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Extend:
    owner: int
    draws: tuple[Draw, ...]
    release_inputs: bool = False
    sink: Sink | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    owner: int
    children: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CloseOwner:
    owner: int
    reply: Future | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Read KVStats and the live-handle count, in order with every command posted before."""

    reply: Future = field(default_factory=reply_future)


@dataclass(frozen=True, slots=True)
class ResetPrefixCache:
    reply: Future = field(default_factory=reply_future)


@dataclass(frozen=True, slots=True)
class UpdateWeights:
    weights: dict
    reply: Future = field(default_factory=reply_future)


Command = (
    NewRoot
    | Fork
    | Release
    | Extend
    | Cancel
    | CloseOwner
    | Snapshot
    | ResetPrefixCache
    | UpdateWeights
)
