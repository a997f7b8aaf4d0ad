"""How many OpenMP threads the engine loop runs torch with, and building off the caller's thread.

libgomp keeps a thread pool for every thread that ran a parallel region, until that thread
exits. When the pools hold more threads than there are cores, libgomp stops spinning between
regions, and every parallel region of every thread then waits on futex wake-ups: on 2 cores a
small matmul took 82-97 us on the loop thread instead of 18 us, 3x the 29 us of one thread
(bench/engine_threads.py measures the engine either way). Two rules follow:

- `off_caller_thread` runs the engine's own torch work at construction (loading weights,
  zeroing the KV cache) in a short-lived thread, whose pool dies with it;
- `pick_threads` times a decode-sized matmul on the loop thread with all cores and with one,
  and keeps the faster: all cores unless another thread's pool already throttles them (then it
  logs why). `Engine(threads=N)` skips the choice.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)
T = TypeVar("T")


def off_caller_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    """fn(*args, **kwargs) in a short-lived thread; its result, or its exception re-raised."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the caller's thread
            out["error"] = exc

    worker = threading.Thread(target=run, name="ponder-build")
    worker.start()
    worker.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pick_threads(repeats: int = 25) -> int:
    """Torch threads for the calling thread: all cores, or 1 when all cores time slower than
    one on a (64 x 128) @ (128 x 1024) matmul (a few ms, once per engine)."""
    cores = torch.get_num_threads()
    if cores <= 1:
        return 1
    x, w = torch.randn(64, 128), torch.randn(1024, 128)
    timed = {}
    for n in (cores, 1):
        torch.set_num_threads(n)
        timed[n] = _median_seconds(lambda: F.linear(x, w), repeats)
    if timed[cores] <= timed[1]:
        return cores
    log.warning(
        "engine loop: %d torch threads ran a matmul in %.0f us, one thread in %.0f us; using "
        "one. Another thread's OpenMP pool throttles this one: build the Engine before other "
        "torch work, or pass Engine(threads=N).",
        cores, timed[cores] * 1e6, timed[1] * 1e6,
    )  # fmt: skip
    return 1
