"""The engine core's cancel, close and failure paths, driven command by command on the test's
thread (no loop thread, so every interleaving is exact): every reply is resolved exactly once,
whatever arrives when, and every test ends with no handle and no block in use."""

import pytest
import torch
from ponder.engine import Engine
from ponder.engine.torch_backend import commands as cmd
from ponder.engine.torch_backend.core import EngineCore
from ponder.engine.torch_backend.kv_cache import BlockManager
from ponder.engine.torch_backend.sampling import RowParams
from ponder.engine.torch_backend.sequence import StopRule

OWNER = 1
PROMPT = (1, 20, 21, 22, 23, 24, 25, 26, 27)


@pytest.fixture(scope="module")
def engine():
    torch.set_num_threads(1)
    eng = Engine.from_pretrained(None, device="cpu", block_size=4, num_blocks=64)
    yield eng
    eng.close()


@pytest.fixture
def core(engine):
    """A core of its own over the engine's runner (the engine's loop stays idle meanwhile)."""
    core = EngineCore(
        engine.core.runner,
        BlockManager(64, 4),
        engine.decode,
        max_num_seqs=8,
        max_num_batched_tokens=256,
    )
    yield core
    assert len(core.handles) == 0 and len(core.inflight) == 0
    assert core.blocks.stats.used == 0


def draw(parent: int, child: int, max_new: int = 4) -> cmd.Draw:
    return cmd.Draw(
        parent, child, StopRule(max_new_tokens=max_new), RowParams(0.0, 0, 1.0, 0.0), None
    )


def run_to_end(core: EngineCore) -> None:
    for _ in range(100):
        if not core.has_work:
            return
        core.step()
    raise AssertionError("the core did not finish its work")


def error_of(reply) -> str | None:
    assert reply.done(), "a reply was never resolved: its caller would wait forever"
    exc = reply.exception()
    return None if exc is None else str(exc)


def parked(core: EngineCore, children=(10, 11)) -> list[cmd.Draw]:
    """A root extended twice: a prefill computes it once, and both draws park on it."""
    core.execute(cmd.NewRoot(OWNER, 0, PROMPT))
    draws = [draw(0, c) for c in children]
    core.execute(cmd.Extend(OWNER, tuple(draws)))
    assert len(core.inflight.prefills) == 1 and len(core.inflight.draws) == 0
    return draws


def test_close_while_draws_are_parked_on_a_prefill_fails_them(core):
    """Found by review: close_owner dropped the draws parked on a prefill without resolving
    their replies, so an extend awaiting them when its context closed waited forever."""
    draws = parked(core)
    core.execute(cmd.CloseOwner(OWNER, cmd.reply_future()))
    assert all("closed" in error_of(d.reply) for d in draws)
    run_to_end(core)


def test_cancel_of_a_parked_draw_resolves_it_and_keeps_its_sibling(core):
    draws = parked(core)
    core.execute(cmd.Cancel(OWNER, (10,)))
    assert "cancelled" in error_of(draws[0].reply) and not draws[1].reply.done()
    assert len(core.inflight.prefills) == 1  # still wanted by draw 11
    run_to_end(core)
    assert error_of(draws[1].reply) is None
    core.execute(cmd.Cancel(OWNER, (11,)))  # it finished first: the cancel releases its branch
    assert error_of(draws[1].reply) is None  # the result stands, resolved once
    core.execute(cmd.CloseOwner(OWNER, cmd.reply_future()))


def test_cancel_after_a_draw_finished_releases_its_branch_and_keeps_the_reply(core):
    core.execute(cmd.NewRoot(OWNER, 0, PROMPT))
    one = draw(0, 10)
    core.execute(cmd.Extend(OWNER, (one,), release_inputs=True))
    run_to_end(core)
    result = one.reply.result()
    assert len(result.new_token_ids) == 4 and 10 in core.handles
    core.execute(cmd.Cancel(OWNER, (10,)))  # the caller's await was cancelled meanwhile
    assert one.reply.result() is result and 10 not in core.handles


def test_cancel_of_every_parked_draw_keeps_the_root_and_its_prefill(core):
    draws = parked(core)
    core.execute(cmd.Cancel(OWNER, (10, 11)))
    assert all("cancelled" in error_of(d.reply) for d in draws)
    (prefill,) = core.inflight.prefills.values()
    assert prefill.members == {0} and not prefill.parked  # the root still wants its KV
    again = (draw(0, 12), draw(0, 13))
    core.execute(cmd.Extend(OWNER, again))  # parks on the same prefill
    assert prefill.parked and len(core.inflight.prefills) == 1
    run_to_end(core)
    assert all(error_of(d.reply) is None for d in again)
    core.execute(cmd.CloseOwner(OWNER, cmd.reply_future()))


def test_a_broken_pool_during_a_failure_still_resolves_every_reply(core, monkeypatch):
    """Found by a mutation probe: when the block manager's state is broken (a bug), the step
    fails, and fail_all freeing the same blocks raised again, killing the loop thread with
    every reply unresolved. Every reply is resolved before any block is freed."""
    draws = parked(core)
    running = draw(0, 12)
    core.execute(cmd.NewRoot(OWNER, 5, PROMPT))
    core.execute(cmd.Extend(OWNER, (running,), release_inputs=True))
    core.step()  # the prefill and the single draw run
    core.step()

    def broken(table):
        raise RuntimeError("double free of block 3: its ref count is already 0")

    monkeypatch.setattr(core.blocks, "free", broken)
    with pytest.raises(RuntimeError, match="double free"):  # the loop logs it and serves on
        core.fail_all(RuntimeError("the step failed"))
    for d in (*draws, running):
        assert error_of(d.reply) is not None
    monkeypatch.undo()
    core.execute(cmd.CloseOwner(OWNER, cmd.reply_future()))
    core.blocks = core.scheduler.blocks = core.handles.blocks = core.inflight.blocks = BlockManager(
        64, 4
    )  # the broken pool's state is lost; the leak check reads a new one
