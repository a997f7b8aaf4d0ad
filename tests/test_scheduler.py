"""The scheduler on its own (no model): admission order and fairness across owners, chunked
prefill, preemption by the stated policy, the "pool cannot hold it" path (stuck, not failed),
eviction of waiting sequences, then of idle handles' KV (LRU, tokens kept), incremental
prefix-cache commits, finish reasons, and a leak check (every block free) at the end of every
test."""

import pytest
from ponder.engine.torch_backend.handles import Handle, HandleTable
from ponder.engine.torch_backend.kv_cache import BlockManager
from ponder.engine.torch_backend.sampling import RowParams, SampleOutput
from ponder.engine.torch_backend.scheduler import Scheduler
from ponder.engine.torch_backend.sequence import Sequence, Status, StopRule

EOS = 0
_ids = iter(range(10**9))


def seq(tokens, owner=0, max_new=4, prefill=False) -> Sequence:
    return Sequence(
        seq_id=next(_ids),
        token_ids=list(tokens),
        stop=StopRule(max_new_tokens=0 if prefill else max_new, eos_token_ids=frozenset({EOS})),
        params=RowParams(1.0, 0, 1.0, 0.0),
        owner=owner,
    )


def run_step(sched: Scheduler, token=7):
    """One pass with a fake sampler that returns `token` for every row; finished sequences'
    blocks go back to the pool (what the core does when nobody adopts them)."""
    batch, stuck = sched.schedule()
    if batch is None:
        return None, stuck, []
    n = len(batch.sample_rows)
    sampled = SampleOutput([token] * n, [-0.5] * n, [[]] * n, [[]] * n)
    finished = sched.postprocess(batch, sampled, lambda ids: "")
    for s in finished:
        sched.blocks.free(s.forget_kv())
    return batch, stuck, finished


def finish_all(sched: Scheduler) -> None:
    for s in list(sched.running) + list(sched.waiting):
        sched.abort(s)


def assert_all_free(bm: BlockManager) -> None:
    assert bm.stats.used == 0, bm.stats


def test_fcfs_within_one_owner_and_chunked_prefill():
    bm = BlockManager(64, 4)
    sched = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=10)
    a, b = seq(range(1, 9)), seq(range(1, 9))  # 8 tokens each
    sched.add(a)
    sched.add(b)
    batch, _, _ = run_step(sched)
    assert [x.token_ids for x in batch.inputs] == [tuple(range(1, 9)), (1, 2)]  # b is chunked
    assert batch.sample_rows == [0]  # b has not reached its last token yet
    batch, _, _ = run_step(sched)
    assert [len(x.token_ids) for x in batch.inputs] == [1, 6]
    finish_all(sched)
    assert_all_free(bm)


def test_a_narrow_owner_is_admitted_before_a_wide_owners_backlog():
    bm = BlockManager(256, 4)
    sched = Scheduler(bm, max_num_seqs=4, max_num_batched_tokens=1000)
    wide = [seq([1, 2, 3], owner=1, max_new=3) for _ in range(12)]
    for s in wide:
        sched.add(s)
    run_step(sched)  # four of the wide owner's sequences take every seat
    small = seq([5, 6], owner=2, max_new=3)
    sched.add(small)
    for _ in range(3):  # the first wide four finish (max_new=3) ...
        run_step(sched)
    # ... and the small request gets the first free seat, ahead of 8 waiting wide sequences.
    assert small.status is Status.RUNNING
    assert sum(s.owner == 1 for s in sched.running) == 3
    finish_all(sched)
    assert_all_free(bm)


def test_preemption_takes_the_widest_owners_newest_sequence():
    bm = BlockManager(6, 2)
    sched = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=100)
    narrow = seq([1, 2, 3], owner=1, max_new=20)
    wide = [seq([4, 5, 6], owner=2, max_new=20) for _ in range(2)]
    for s in [narrow, *wide]:
        sched.add(s)
    run_step(sched)  # 3 x 2 blocks: the pool is full
    assert bm.num_free_blocks == 0
    run_step(sched)
    run_step(sched)  # every sequence needs a third block now: someone must give way
    assert sched.num_preemptions >= 1
    assert narrow.status is Status.RUNNING  # the narrow owner keeps its seat
    assert wide[1].status is Status.WAITING and wide[1].block_table == []
    assert sched.waiting[0] is wide[1]  # back at the front of the queue
    finish_all(sched)
    assert_all_free(bm)


def test_a_sequence_the_pool_cannot_hold_is_returned_stuck_not_failed():
    bm = BlockManager(4, 2)
    pinned = bm.allocate([1, 2, 3, 4, 5, 6])  # three of four blocks held by someone else
    sched = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=100)
    big = seq(range(10, 16))
    sched.add(big)
    batch, stuck, _ = run_step(sched)
    assert batch is None and stuck is big
    assert big.status is Status.WAITING and big.error is None  # the core decides
    bm.free(pinned.block_ids)  # the other owner releases: now it fits
    batch, stuck, _ = run_step(sched)
    assert batch is not None and stuck is None and big.status is Status.RUNNING
    finish_all(sched)
    assert_all_free(bm)


def test_nothing_running_evicts_a_waiting_sequences_blocks():
    bm = BlockManager(4, 2)
    sched = Scheduler(bm, max_num_seqs=1, max_num_batched_tokens=100)
    holder = seq([1, 2, 3])
    holder.block_table = bm.fork(bm.allocate([1, 2, 3]).block_ids)  # a fork: shared blocks
    bm.free(holder.block_table)  # drop the allocation's own reference; the fork keeps one
    holder.num_computed = 2
    big = seq(range(10, 16))
    sched.add(big)
    sched.add(holder)
    batch, stuck, _ = run_step(sched)
    assert stuck is None and batch.seqs == [big]
    assert holder.block_table == [] and holder.num_computed == 0  # will recompute
    assert sched.num_preemptions == 1
    finish_all(sched)
    assert_all_free(bm)


def test_commit_is_incremental_and_finish_reasons_use_the_protocol_vocabulary():
    bm = BlockManager(16, 2)
    sched = Scheduler(bm, max_num_seqs=4, max_num_batched_tokens=100, max_model_len=7)
    a = seq([1, 2, 3, 4, 5], max_new=2)  # its budget ends at max_model_len (7 tokens)
    b = seq([1, 2, 3], max_new=1)
    sched.add(a)
    sched.add(b)
    _, _, finished = run_step(sched)
    assert a.num_hashed_blocks == 2  # [1,2] [3,4] full and computed; the partial one is not
    assert finished == [b] and b.finish_reason == "length"
    _, _, finished = run_step(sched)
    assert finished == [a] and a.finish_reason == "max_model_len"
    assert bm.stats.cached_free == 3  # its three full blocks stay in the prefix cache
    c = seq([9, 9, 9])
    sched.add(c)
    _, _, finished = run_step(sched, token=EOS)
    assert finished == [c] and c.finish_reason == "eos" and c.stop_reason is None
    assert_all_free(bm)


def test_a_prefill_computes_without_sampling():
    bm = BlockManager(16, 2)
    sched = Scheduler(bm, max_num_seqs=4, max_num_batched_tokens=3)
    p = seq([1, 2, 3, 4, 5], prefill=True)
    sched.add(p)
    batch, _, finished = run_step(sched)
    assert batch.sample_rows == [] and finished == []  # chunked: 3 of 5 tokens
    _, _, finished = run_step(sched)
    assert finished == [p] and p.token_ids == [1, 2, 3, 4, 5]
    assert_all_free(bm)


def test_bad_limits_are_value_errors():
    with pytest.raises(ValueError, match="max_num_seqs"):
        Scheduler(BlockManager(4, 2), max_num_seqs=0, max_num_batched_tokens=4)


def idle_handle(handles: HandleTable, handle_id: int, tokens: list[int]) -> Handle:
    """A finished branch: KV for all but its last (sampled, pending) token, full blocks hashed."""
    bm = handles.blocks
    table = list(bm.allocate(tokens).block_ids)
    hashed = bm.commit(table, tokens, len(tokens) - 1)
    handle = Handle(0, tuple(tokens), table, len(tokens) - 1, hashed)
    handles.add(handle_id, handle)
    return handle


def test_a_stuck_sequence_takes_the_kv_of_idle_handles_least_recently_used_first():
    bm = BlockManager(6, 4)
    handles = HandleTable(bm)
    sched = Scheduler(bm, max_num_seqs=4, max_num_batched_tokens=64)
    old = idle_handle(handles, 1, list(range(20, 29)))  # blocks 0 [20..23] 1 [24..27] 2
    idle_handle(handles, 2, list(range(40, 49)))  # blocks 3 4 5: the pool is full
    handles.get(2, owner=0)  # read: handle 1 is now the least recently used
    s = seq(range(60, 68), owner=1)  # needs 2 blocks
    sched.add(s)
    assert run_step(sched)[1] is s  # nothing runs and nothing waiting holds blocks: stuck
    assert handles.make_room(s.token_ids) == [1]
    assert old.token_ids == tuple(range(20, 29)) and old.evicted  # tokens kept, KV dropped
    assert (old.block_table, old.num_computed, old.num_hashed_blocks) == ([], 0, 0)
    assert bm.free_queue() == [2, 1, 0]  # its tail first; blocks 0 and 1 keep their hashes
    batch, stuck, _ = run_step(sched)
    assert stuck is None and batch.inputs[0].block_table == (2, 1)  # [24..27] is evicted
    finish_all(sched)
    # Its recompute hits the prefix cache for the block that survived.
    again = bm.allocate(list(old.token_ids[:-1]))
    assert again.block_ids[0] == 0 and again.num_cached_tokens == 4
    bm.free(again.block_ids)
    handles.release(2, owner=0)
    assert_all_free(bm)


def test_make_room_skips_nothing_and_stops_when_the_pool_is_empty():
    bm = BlockManager(4, 4)
    handles = HandleTable(bm)
    a = idle_handle(handles, 1, list(range(1, 10)))  # blocks 0 1 2
    handles.fork(1, (2,), owner=0)  # handle 2 shares them: evicting 1 alone frees nothing
    assert handles.make_room(list(range(100, 108))) == [1, 2]
    assert a.block_table == [] and bm.stats.used == 0
    # A sequence larger than the whole pool cannot be helped.
    idle_handle(handles, 3, [5, 6, 7])
    assert handles.make_room(list(range(17))) == [3]
    assert not bm.can_allocate(list(range(17)))
    for handle_id in (1, 2, 3):
        handles.release(handle_id, owner=0)
    assert_all_free(bm)
