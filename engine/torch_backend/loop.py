"""EngineLoop: a background thread that owns the EngineCore and serves every caller.

Callers never touch the core. They post typed commands (engine/torch_backend/commands.py) to a
FIFO inbox; replies come back in `concurrent.futures.Future`s created already running, so async
callers can `asyncio.wrap_future` them and cancel their await at any moment without the loop's
`set_result` failing. Many searches and server requests, in any number of event loops or
threads, share one scheduler and one forward pass per step. Commands run in order on the loop
thread, between steps, so a fork posted before a release is applied before it.

The loop thread never dies from a caller's action: a command that raises fails its own reply
(or is dropped), and an exception inside a step (a bug, not bad input: input is validated at
submission) fails every in-flight draw and frees its blocks, and the loop keeps serving. At
interpreter exit an open loop is closed (atexit), so abandoned work cannot abort the process.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading

import torch
from ponder.engine.torch_backend import commands as cmd
from ponder.engine.torch_backend.core import CoreSnapshot, EngineCore
from ponder.engine.torch_backend.threads import pick_threads

log = logging.getLogger(__name__)

_STOP = object()


class EngineLoop:
    def __init__(
        self, core: EngineCore, *, threads: int | None = None, name: str = "ponder-engine"
    ):
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.core = core
        self.threads = threads
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._last = core.snapshot()  # refreshed by every query and at shutdown
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # ------------------------------------------------------------------ caller side

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def post(self, command: cmd.Command) -> None:
        """Queue a command (never blocks; safe from __del__: SimpleQueue.put is reentrant)."""
        if self._closed:
            raise RuntimeError("the engine is closed; create a new Engine")
        self._inbox.put(command)

    def snapshot(self, timeout: float = 30.0) -> CoreSnapshot:
        """The core's state after every command posted before; the last published snapshot
        if the loop is closed or does not answer within `timeout` (never hangs)."""
        if self._closed or not self.alive:
            return self._last
        query = cmd.Snapshot()
        self._inbox.put(query)
        try:
            self._last = query.reply.result(timeout)
            return self._last
        except TimeoutError:
            return self._last

    def close(self, timeout: float = 10.0) -> None:
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._inbox.put(_STOP)
        self._thread.join(timeout)

    # ------------------------------------------------------------------ loop thread

    def _run(self) -> None:
        runner = getattr(self.core, "runner", None)
        if self.threads is None and runner is not None and runner.device.type == "cpu":
            self.threads = pick_threads()
        if self.threads is not None:  # torch's intra-op thread count is per calling thread
            torch.set_num_threads(self.threads)
        while True:
            # Block only when there is nothing to compute; otherwise drain what arrived.
            try:
                command = self._inbox.get(block=not self.core.has_work)
                while True:
                    if command is _STOP:
                        self._shutdown()
                        return
                    self._execute(command)
                    command = self._inbox.get_nowait()
            except queue.Empty:
                pass
            if self.core.has_work:
                self._step()

    def _execute(self, command: cmd.Command) -> None:
        try:
            self.core.execute(command)
        except Exception as exc:  # a broken invariant: report it, keep serving
            log.exception("engine command %r failed", type(command).__name__)
            cmd.resolve(getattr(command, "reply", None), error=exc)
            for draw in getattr(command, "draws", ()):
                cmd.resolve(draw.reply, error=exc)

    def _step(self) -> None:
        try:
            self.core.step()
        except Exception as exc:  # a bug in a step: fail what is in flight, keep serving
            log.exception("engine step failed; failing every request in flight")
            try:
                self.core.fail_all(exc)  # resolves every reply first, then frees the blocks
            except Exception:  # the pool's state itself is broken: the loop still serves
                log.exception("freeing the failed requests' blocks failed too")

    def _shutdown(self) -> None:
        self.core.fail_all(RuntimeError("the engine was closed while this request was running"))
        self._last = self.core.snapshot()
