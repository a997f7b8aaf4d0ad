"""Engine threads (engine/torch_backend/threads.py): construction work runs off the caller's
thread with its result or exception handed back, and the loop thread's count is either what the
caller asked for or the automatic choice between every core and one."""

import threading

import pytest
import torch
from ponder.engine import Engine, SamplingParams
from ponder.engine.torch_backend.threads import off_caller_thread, pick_threads


def test_off_caller_thread_returns_and_raises():
    caller = threading.get_ident()
    assert off_caller_thread(lambda a, b=0: (a + b, threading.get_ident()), 2, b=3)[0] == 5
    assert off_caller_thread(threading.get_ident) != caller

    def boom():
        raise KeyError("no such weight")

    with pytest.raises(KeyError, match="no such weight"):
        off_caller_thread(boom)


def test_pick_threads_is_all_cores_or_one():
    cores = torch.get_num_threads()
    got = off_caller_thread(pick_threads, repeats=5)
    assert got in {1, cores}


@pytest.mark.parametrize("threads", [None, 1])
def test_loop_thread_count(threads):
    engine = Engine.from_pretrained(threads=threads)
    try:
        out = engine.generate("Q: 1+2\n", SamplingParams(n=2, max_tokens=4, seed=0))
        assert len(out[0].outputs) == 2
        chosen = engine.loop.threads
        assert chosen == 1 if threads == 1 else chosen in {1, torch.get_num_threads()}
    finally:
        engine.close()
