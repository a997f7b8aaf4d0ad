"""EngineLoop: a background thread that owns the EngineCore and serves every caller.

Callers never touch the core. They post commands (plain callables) to a FIFO inbox and get a
`concurrent.futures.Future` back; async callers wrap it with `asyncio.wrap_future`, so many
searches and server requests, in any number of event loops or threads, share one scheduler and
one forward pass per step. Commands run in order on the loop thread, between steps, so a fork
posted before a release is applied before it.

An exception inside a step is a bug, not bad input: every in-flight sequence is failed with it
(their futures raise) and aborted so no KV block leaks, and the loop keeps serving.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import torch
from ponder.engine.torch_backend.core import EngineCore
from ponder.engine.torch_backend.sequence import Sequence


class EngineLoop:
    def __init__(
        self, core: EngineCore, *, threads: int | None = None, name: str = "ponder-engine"
    ):
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.core = core
        self.threads = threads
        self._inbox: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._pending: dict[int, tuple[Sequence, Future]] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ caller side

    @property
    def closed(self) -> bool:
        return self._closed

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run `fn` on the loop thread between steps; its result or error lands in the future."""
        if self._closed:
            raise RuntimeError("the engine is closed; create a new Engine")
        future: Future = Future()

        def command() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as exc:  # delivered to the caller, not swallowed
                future.set_exception(exc)

        self._inbox.put(command)
        return future

    def submit(
        self, seqs: list[Sequence], prepare: Callable[[], None] | None = None
    ) -> list[Future]:
        """Schedule sequences (after running `prepare` on the loop thread); one future each,
        resolved with the finished Sequence."""
        if self._closed:
            raise RuntimeError("the engine is closed; create a new Engine")
        futures = [Future() for _ in seqs]

        def command() -> None:
            try:
                if prepare is not None:
                    prepare()
            except BaseException as exc:
                for f in futures:
                    f.set_exception(exc)
                return
            for seq, f in zip(seqs, futures, strict=True):
                self._pending[seq.seq_id] = (seq, f)
                self.core.add(seq)

        self._inbox.put(command)
        return futures

    def close(self, timeout: float = 10.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.put(None)
        self._thread.join(timeout)

    # ------------------------------------------------------------------ loop thread

    def _run(self) -> None:
        if self.threads is not None:  # torch's intra-op thread count is per calling thread
            torch.set_num_threads(self.threads)
        while True:
            # Block only when there is nothing to compute; otherwise drain what arrived.
            try:
                command = self._inbox.get(block=not self.core.has_work)
            except queue.Empty:
                command = ...
            while command is not ...:
                if command is None:
                    self._shutdown()
                    return
                command()
                try:
                    command = self._inbox.get_nowait()
                except queue.Empty:
                    command = ...
            if self.core.has_work:
                self._step()

    def _step(self) -> None:
        try:
            finished = self.core.step()
        except Exception as exc:  # a bug in a step: fail what is in flight, keep serving
            self._fail_all(exc)
            return
        for seq in finished:
            _, future = self._pending.pop(seq.seq_id)
            future.set_result(seq)

    def _fail_all(self, exc: Exception) -> None:
        for seq, future in self._pending.values():
            self.core.abort(seq)
            future.set_exception(exc)
        self._pending.clear()

    def _shutdown(self) -> None:
        self._fail_all(RuntimeError("the engine was closed while this request was running"))
