"""Admission control: at most `max_concurrent` requests run, at most `max_queue` wait, none
waits longer than `queue_timeout_s`.

A full queue is a 429 and a timed-out wait a 503, both with Retry-After, so an overloaded
server answers quickly instead of failing. The engine below has its own scheduler queue; this
bounds how much work (and KV) the server lets into it.
"""

from __future__ import annotations

import asyncio

from ponder.apps.serve.config import Limits
from ponder.apps.serve.errors import APIError


class Ticket:
    """A running slot; `release` is idempotent, so every exit path may call it."""

    def __init__(self, admission: Admission):
        self._admission = admission
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._admission._release()


class Admission:
    def __init__(self, limits: Limits, metrics):
        self.limits = limits
        self.metrics = metrics
        self.waiting = 0
        self.running = 0
        self._slots = asyncio.Semaphore(limits.max_concurrent)

    async def acquire(self) -> Ticket:
        retry = {"Retry-After": str(max(1, int(self.limits.queue_timeout_s // 4)))}
        if self._slots.locked() and self.waiting >= self.limits.max_queue:
            raise APIError(
                429, f"the server's queue is full ({self.waiting} waiting); retry later",
                code="queue_full", headers=retry,
            )  # fmt: skip
        self.waiting += 1
        self.metrics.queue_depth.set(self.waiting)
        try:
            await asyncio.wait_for(self._slots.acquire(), self.limits.queue_timeout_s)
        except asyncio.TimeoutError:
            raise APIError(
                503, f"no capacity within {self.limits.queue_timeout_s}s; retry later",
                code="overloaded", headers=retry,
            ) from None  # fmt: skip
        finally:
            self.waiting -= 1
            self.metrics.queue_depth.set(self.waiting)
        self.running += 1
        self.metrics.running.labels("all").set(self.running)
        return Ticket(self)

    def _release(self) -> None:
        self.running -= 1
        self.metrics.running.labels("all").set(self.running)
        self._slots.release()
