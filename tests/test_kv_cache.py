"""Exact-state tests of the block manager: block ids, ref counts, hashes, free-queue order,
copy-on-write and prefix hits, each ending with a leak check; then a random state machine that
checks every hit and every copy against a simulated KV store."""

from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from ponder.engine import kv_cache
from ponder.engine.kv_cache import Allocation, BlockManager, KVStats, chain_hash

BLOCK_SIZES = [1, 2, 4, 16]
PARTIAL_BLOCK_SIZES = [2, 4, 16]  # sizes where a block can be partially filled


def toks(n: int, start: int = 100) -> list[int]:
    return list(range(start, start + n))


def prefill(bm: BlockManager, tokens: list[int]) -> list[int]:
    """Allocate and compute a whole prompt, as one prefill step does."""
    table = list(bm.allocate(tokens).block_ids)
    bm.commit(table, tokens, len(tokens))
    return table


def refs(bm: BlockManager) -> list[int]:
    return [bm.ref_count(b) for b in range(bm.num_blocks)]


def hashes(bm: BlockManager) -> list[int | None]:
    return [bm.block_hash(b) for b in range(bm.num_blocks)]


def snapshot(bm: BlockManager) -> tuple:
    tokens = [bm.block_tokens(b) for b in range(bm.num_blocks)]
    return bm.free_queue(), refs(bm), hashes(bm), tokens, bm.stats


def assert_no_leaks(bm: BlockManager, *tables) -> None:
    """Free the given tables; then every block must be free again."""
    for table in tables:
        bm.free(table)
    assert refs(bm) == [0] * bm.num_blocks
    assert sorted(bm.free_queue()) == list(range(bm.num_blocks))
    stats = bm.stats
    assert stats.used == 0 and stats.free == stats.total == bm.num_free_blocks == bm.num_blocks


# ---------------------------------------------------------------------- allocation and release


@pytest.mark.parametrize(
    ("num_blocks", "block_size", "bad"),
    [(0, 4, "num_blocks"), (-1, 4, "num_blocks"), (True, 4, "num_blocks"), (4, 0, "block_size"),
     (4, 2.0, "block_size")],
)  # fmt: skip
def test_constructor_rejects_bad_sizes(num_blocks, block_size, bad):
    with pytest.raises(ValueError, match=bad):
        BlockManager(num_blocks, block_size)


@pytest.mark.parametrize("bs", BLOCK_SIZES)
def test_fresh_blocks_come_from_the_queue_head(bs):
    bm = BlockManager(6, bs)
    a = bm.allocate(toks(2 * bs + 1))
    b = bm.allocate([7])
    assert a == Allocation((0, 1, 2), 0) and b == Allocation((3,), 0)
    assert refs(bm) == [1, 1, 1, 1, 0, 0]
    assert bm.free_queue() == [4, 5]
    assert hashes(bm) == [None] * 6  # nothing is committed yet
    assert bm.stats == KVStats(total=6, used=4, cached_free=0, free=2)
    assert_no_leaks(bm, a.block_ids, b.block_ids)


@pytest.mark.parametrize("bs", BLOCK_SIZES)
def test_free_releases_the_tail_first(bs):
    bm = BlockManager(5, bs)
    a = bm.allocate(toks(3 * bs))
    bm.free(a.block_ids)
    assert bm.free_queue() == [3, 4, 2, 1, 0]  # the tail is evicted before the prefix
    assert_no_leaks(bm)


@pytest.mark.parametrize("bs", BLOCK_SIZES)
def test_same_prompt_shares_its_full_blocks(bs):
    bm = BlockManager(8, bs)
    prompt = toks(3 * bs + 1)
    a = prefill(bm, prompt)
    b = bm.allocate(prompt)
    assert a == [0, 1, 2, 3]
    assert b == Allocation((0, 1, 2, 4), 3 * bs)
    assert refs(bm)[:5] == [2, 2, 2, 1, 1]
    assert bm.free_queue() == [5, 6, 7]
    assert_no_leaks(bm, a, b.block_ids)


@pytest.mark.parametrize("bs", BLOCK_SIZES)
def test_partial_prefix_hit_stops_at_the_first_different_block(bs):
    bm = BlockManager(10, bs)
    prompt = toks(3 * bs + 1)
    a = prefill(bm, prompt)
    b = bm.allocate(prompt[:bs] + [7] * (2 * bs + 1))
    assert b == Allocation((0, 4, 5, 6), bs)
    # One token differing in block 1 misses blocks 1 and 2, though block 2's tokens match.
    changed = prompt[: 2 * bs - 1] + [7] + prompt[2 * bs :]
    c = bm.allocate(changed)
    assert c == Allocation((0, 7, 8, 9), bs)
    assert refs(bm)[:4] == [3, 1, 1, 1] and bm.free_queue() == []
    assert_no_leaks(bm, a, b.block_ids, c.block_ids)


@pytest.mark.parametrize("bs", BLOCK_SIZES)
def test_a_fully_cached_prompt_still_computes_its_last_block(bs):
    bm = BlockManager(6, bs)
    prompt = toks(2 * bs)
    a = prefill(bm, prompt)
    assert a == [0, 1] and None not in hashes(bm)[:2]
    b = bm.allocate(prompt)
    assert b == Allocation((0, 2), bs)  # block 1 would hit, but the last token needs logits
    c = bm.allocate(prompt[:bs])
    assert c == Allocation((3,), 0)
    assert refs(bm) == [2, 1, 1, 1, 0, 0]
    assert_no_leaks(bm, a, b.block_ids, c.block_ids)


@pytest.mark.parametrize("bs", BLOCK_SIZES)
def test_released_blocks_keep_their_hash_and_hit_again(bs):
    bm = BlockManager(6, bs)
    prompt = toks(2 * bs + 1)
    a = prefill(bm, prompt)
    kept = hashes(bm)
    bm.free(a)
    one = int(bs == 1)  # with one-token blocks the last block is full, hence hashed too
    assert hashes(bm) == kept and None not in kept[:2]
    assert bm.free_queue() == [3, 4, 5, 2, 1, 0]
    assert bm.stats == KVStats(total=6, used=0, cached_free=2 + one, free=6)
    b = bm.allocate(prompt)
    assert b == Allocation((0, 1, 3), 2 * bs)  # ref 0 -> 1, out of the free queue
    assert refs(bm) == [1, 1, 0, 1, 0, 0]
    assert bm.free_queue() == [4, 5, 2]
    assert bm.stats == KVStats(total=6, used=3, cached_free=one, free=3)
    assert_no_leaks(bm, b.block_ids)


@pytest.mark.parametrize("bs", BLOCK_SIZES)
def test_eviction_takes_the_least_recently_freed_block_and_drops_its_hash(bs):
    bm = BlockManager(4, bs)
    x_prompt = toks(2 * bs)
    x = prefill(bm, x_prompt)
    y = prefill(bm, toks(2 * bs, start=200))
    bm.free(x)
    bm.free(y)
    assert bm.free_queue() == [1, 0, 3, 2]
    h0, h2 = bm.block_hash(0), bm.block_hash(2)
    z = bm.allocate([7])
    assert z == Allocation((1,), 0)
    assert hashes(bm) == [h0, None, h2, bm.block_hash(3)] and None not in (h0, h2)
    assert bm.free_queue() == [0, 3, 2]
    # Block 1's content is gone: only block 0 hits, and two fresh blocks evict y's blocks.
    x2 = bm.allocate(x_prompt + [9])
    assert x2 == Allocation((0, 3, 2), bs)
    assert hashes(bm) == [h0, None, None, None] and bm.free_queue() == []
    assert_no_leaks(bm, z.block_ids, x2.block_ids)


# ---------------------------------------------------------------------- fork and append


@pytest.mark.parametrize("bs", BLOCK_SIZES)
def test_fork_shares_every_block(bs):
    bm = BlockManager(4, bs)
    parent = list(bm.allocate(toks(bs + 1)).block_ids)
    kid = bm.fork(parent)
    assert kid == [0, 1] and kid is not parent
    assert refs(bm) == [2, 2, 0, 0] and bm.free_queue() == [2, 3]
    bm.free(parent)
    assert refs(bm) == [1, 1, 0, 0] and bm.free_queue() == [2, 3]
    assert_no_leaks(bm, kid)


@pytest.mark.parametrize("bs", PARTIAL_BLOCK_SIZES)
def test_append_to_a_shared_partial_block_copies_on_write(bs):
    bm = BlockManager(6, bs)
    parent = list(bm.allocate(toks(bs + 1)).block_ids)  # block 1 holds one token
    kid = bm.fork(parent)
    assert bm.append_slots(kid, bs + 1, 1) == [(1, 2)]
    assert kid == [0, 2] and parent == [0, 1]
    assert refs(bm) == [2, 1, 1, 0, 0, 0] and bm.free_queue() == [3, 4, 5]
    assert bm.append_slots(parent, bs + 1, 1) == [] and parent == [0, 1]  # its own now
    assert_no_leaks(bm, parent, kid)


@pytest.mark.parametrize("bs", PARTIAL_BLOCK_SIZES)
def test_append_to_an_unshared_partial_block_writes_in_place(bs):
    bm = BlockManager(4, bs)
    table = list(bm.allocate(toks(bs + 1)).block_ids)
    assert bm.append_slots(table, bs + 1, bs - 1) == []  # fills block 1 exactly
    assert table == [0, 1] and refs(bm) == [1, 1, 0, 0] and bm.free_queue() == [2, 3]
    assert_no_leaks(bm, table)


@pytest.mark.parametrize("bs", BLOCK_SIZES)
def test_append_across_block_boundaries(bs):
    bm = BlockManager(6, bs)
    table = list(bm.allocate(toks(bs)).block_ids)
    kid = bm.fork(table)
    # The shared block is full, so nothing is written into it: no copy, only new blocks.
    assert bm.append_slots(kid, bs, 2 * bs + 1) == []
    assert kid == [0, 1, 2, 3] and refs(bm) == [2, 1, 1, 1, 0, 0]
    assert bm.append_slots(kid, 3 * bs + 1, 0) == [] and kid == [0, 1, 2, 3]
    assert bm.free_queue() == [4, 5]
    assert_no_leaks(bm, table, kid)


@pytest.mark.parametrize("bs", BLOCK_SIZES)
def test_append_replaces_shared_unwritten_blocks_without_copies(bs):
    bm = BlockManager(6, bs)
    table = list(bm.allocate(toks(3 * bs)).block_ids)  # forked after a first prefill chunk
    kid = bm.fork(table)
    assert bm.append_slots(kid, bs, 2 * bs) == []  # blocks 1 and 2 hold nothing yet
    assert kid == [0, 3, 4] and refs(bm) == [2, 1, 1, 1, 1, 0]
    assert bm.append_slots(table, bs, 2 * bs) == [] and table == [0, 1, 2]
    assert_no_leaks(bm, table, kid)


def test_a_short_pool_changes_nothing():
    bm = BlockManager(4, 2)
    a = prefill(bm, [1, 2, 3, 4, 5])  # blocks 0, 1, 2; block 3 is free
    before = snapshot(bm)
    assert not bm.can_allocate([7, 8, 9]) and bm.allocate([7, 8, 9]) is None
    assert not bm.can_append(a, 5, 4) and bm.append_slots(a, 5, 4) is None
    assert snapshot(bm) == before and a == [0, 1, 2]
    kid = bm.fork(a)
    z = bm.allocate([9])
    before = snapshot(bm)
    assert not bm.can_append(kid, 5, 1)  # the copy-on-write needs a block
    assert bm.append_slots(kid, 5, 1) is None
    assert snapshot(bm) == before and kid == [0, 1, 2]
    assert_no_leaks(bm, a, kid, z.block_ids)


def test_hits_on_free_blocks_count_against_the_pool():
    bm = BlockManager(4, 2)
    bm.free(prefill(bm, [1, 2, 3, 4, 5]))  # blocks 0 and 1 cached; queue 3, 2, 1, 0
    z = bm.allocate([9])
    before = snapshot(bm)
    # Two hits leave the free queue as well: 2 hits + 2 fresh > 3 free blocks.
    assert not bm.can_allocate([1, 2, 3, 4, 5, 6, 7])
    assert bm.allocate([1, 2, 3, 4, 5, 6, 7]) is None
    assert snapshot(bm) == before
    b = bm.allocate([1, 2, 3, 4, 5])  # 2 hits + 1 fresh: fits exactly
    assert b == Allocation((0, 1, 2), 4) and bm.free_queue() == []
    assert_no_leaks(bm, z.block_ids, b.block_ids)


# ---------------------------------------------------------------------- prefix cache


@pytest.mark.parametrize("bs", PARTIAL_BLOCK_SIZES)
def test_commit_hashes_only_full_computed_blocks(bs):
    bm = BlockManager(4, bs)
    tokens = toks(3 * bs + 1)
    table = list(bm.allocate(tokens).block_ids)
    h0 = chain_hash(None, tuple(tokens[:bs]))
    h1 = chain_hash(h0, tuple(tokens[bs : 2 * bs]))
    h2 = chain_hash(h1, tuple(tokens[2 * bs : 3 * bs]))
    bm.commit(table, tokens, 0)
    bm.commit(table, tokens, bs - 1)
    assert hashes(bm) == [None] * 4
    bm.commit(table, tokens, 2 * bs + 1)
    assert hashes(bm) == [h0, h1, None, None]
    assert bm.block_tokens(1) == tuple(tokens[bs : 2 * bs]) and bm.block_tokens(2) is None
    bm.commit(table, tokens, 3 * bs + 1)  # block 3 holds one token: not full, not hashed
    assert hashes(bm) == [h0, h1, h2, None]
    bm.commit(table, tokens, 3 * bs + 1)
    assert hashes(bm) == [h0, h1, h2, None]
    assert_no_leaks(bm, table)


def test_commit_hashes_each_block_once(monkeypatch):
    calls = []

    def counting(parent, tokens):
        calls.append(tokens)
        return hash((parent, tokens))

    monkeypatch.setattr(kv_cache, "chain_hash", counting)
    bm = BlockManager(8, 2)
    tokens = [1, 2, 3]
    table = list(bm.allocate(tokens).block_ids)
    calls.clear()
    bm.commit(table, tokens, 3)
    for t in range(4, 13):  # decode one token per step, committing every step
        assert bm.append_slots(table, len(tokens), 1) == []
        tokens.append(t)
        bm.commit(table, tokens, len(tokens))
    assert calls == [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)]
    assert_no_leaks(bm, table)


def test_duplicate_blocks_stay_unhashed_and_are_not_rehashed(monkeypatch):
    bm = BlockManager(8, 2)
    prompt = [1, 2, 3, 4, 5]
    a = list(bm.allocate(prompt).block_ids)  # both prefilled in one step: no hit yet
    b = list(bm.allocate(prompt).block_ids)
    bm.commit(a, prompt, 5)
    bm.commit(b, prompt, 5)
    h0 = chain_hash(None, (1, 2))
    h1 = chain_hash(h0, (3, 4))
    assert (a, b) == ([0, 1, 2], [3, 4, 5])
    assert hashes(bm) == [h0, h1] + [None] * 6  # the map keeps a's blocks
    calls = []
    monkeypatch.setattr(kv_cache, "chain_hash", lambda p, t: calls.append(t) or hash((p, t)))
    bm.commit(b, prompt, 5)
    assert calls == []
    # b's next full block is registered, chained after the prefix a's blocks hold.
    assert bm.append_slots(b, 5, 1) == []
    bm.commit(b, prompt + [6], 6)
    assert calls == [(5, 6)] and bm.block_hash(5) == chain_hash(h1, (5, 6))
    c = bm.allocate(prompt + [6, 7])
    assert c == Allocation((0, 1, 5, 6), 6)
    assert_no_leaks(bm, a, b, c.block_ids)


def test_a_hash_collision_is_a_miss(monkeypatch):
    monkeypatch.setattr(kv_cache, "chain_hash", lambda parent, tokens: 42)
    bm = BlockManager(8, 2)
    a = prefill(bm, [1, 2, 3])
    b = prefill(bm, [7, 8, 9])  # same hash as a's block 0, other tokens
    assert (a, b) == ([0, 1], [2, 3])
    assert hashes(bm)[:4] == [42, None, None, None]  # the map still points at block 0
    assert bm.block_tokens(0) == (1, 2)
    assert bm.allocate([7, 8, 9]) == Allocation((4, 5), 0)
    c = bm.allocate([1, 2, 3])
    assert c == Allocation((0, 6), 2)
    assert_no_leaks(bm, a, b, [4, 5], c.block_ids)


def test_a_block_is_never_found_after_another_prefix(monkeypatch):
    """Blocks X and Y collide. A block Z computed after Y holds the right tokens under the right
    chained hash for X Z, yet its KV belongs to Y Z: it must not be a hit."""
    x, y = (1, 1), (2, 2)
    monkeypatch.setattr(
        kv_cache, "chain_hash", lambda parent, tokens: hash((parent, x if tokens == y else tokens))
    )
    bm = BlockManager(8, 2)
    # 1. Two sequences starting with Y, prefilled together: q's block 2 duplicates b's block 0,
    #    and q's block 3 (Z) is registered after the prefix Y.
    b = list(bm.allocate([2, 2, 9]).block_ids)
    q = list(bm.allocate([2, 2, 3, 3, 9]).block_ids)
    bm.commit(b, [2, 2, 9], 3)
    bm.commit(q, [2, 2, 3, 3, 9], 5)
    assert (b, q) == ([0, 1], [2, 3, 4])
    h = hashes(bm)
    assert h[0] is not None and h[1:3] == [None, None] and h[3] is not None
    # 2. b is freed and its blocks evicted; q still holds Z.
    bm.free(b)
    bm.free(bm.allocate([8] * 9).block_ids)
    assert bm.block_hash(0) is None and bm.block_hash(3) is not None
    # 3. X registers under Y's old hash; X Z's block 1 cannot take Z's slot in the map.
    a = prefill(bm, [1, 1, 3, 3, 9])
    assert a == [0, 1, 7] and bm.block_hash(0) is not None and bm.block_hash(1) is None
    # 4. Looking up X Z finds X, then block 3 under the right hash and tokens: still a miss.
    c = bm.allocate([1, 1, 3, 3, 9])
    assert c == Allocation((0, 6, 5), 2)
    assert_no_leaks(bm, q, a, c.block_ids)


def test_caller_mistakes_and_broken_invariants_raise():
    bm = BlockManager(4, 2)
    a = list(bm.allocate([1, 2, 3]).block_ids)
    before = snapshot(bm)
    with pytest.raises(ValueError, match="empty"):
        bm.allocate([])
    with pytest.raises(ValueError, match="empty"):
        bm.can_allocate([])
    with pytest.raises(ValueError, match="fit the table"):
        bm.append_slots(a, 5, 1)
    with pytest.raises(ValueError, match=">= 0"):
        bm.can_append(a, -1, 1)
    with pytest.raises(ValueError, match="num_computed"):
        bm.commit(a, [1, 2, 3], 4)
    with pytest.raises(ValueError, match="block id 9"):
        bm.fork([9])
    assert snapshot(bm) == before
    bm.commit(a, [1, 2, 3], 3)
    with pytest.raises(ValueError, match="committed"):
        bm.append_slots(a, 1, 1)  # would overwrite a block the prefix cache serves
    bm.free(a)
    before = snapshot(bm)
    with pytest.raises(RuntimeError, match="double free"):
        bm.free(a)
    with pytest.raises(RuntimeError, match="ref count is already 0"):
        bm.fork(a)
    assert snapshot(bm) == before
    assert_no_leaks(bm)


# ---------------------------------------------------------------------- random operations


@dataclass
class _Seq:
    table: list[int]
    tokens: list[int]
    computed: int


class BlockManagerMachine(RuleBasedStateMachine):
    """Random allocate / fork / append / commit / free over a simulated KV store: every slot
    records the token prefix its KV was computed from, so a wrong hit or a missed copy shows."""

    def __init__(self):
        super().__init__()
        self.bm: BlockManager | None = None
        self.seqs: list[_Seq] = []
        self.kv: list[list[tuple[int, ...] | None]] = []  # block -> slot -> prefix it encodes

    @initialize(
        num_blocks=st.integers(1, 16),
        bs=st.sampled_from(BLOCK_SIZES),
        base=st.lists(st.integers(0, 2), min_size=64, max_size=64),
    )
    def start(self, num_blocks, bs, base):
        self.bm = BlockManager(num_blocks, bs)
        self.kv = [[None] * bs for _ in range(num_blocks)]
        self.base = base  # prompts start with a piece of it, so that they share prefixes

    @rule(data=st.data())
    def allocate(self, data):
        bm, bs = self.bm, self.bm.block_size
        shared = data.draw(st.integers(0, 3 * bs), label="shared")
        own = data.draw(st.lists(st.integers(0, 2), max_size=bs + 1), label="own")
        tokens = (self.base[:shared] + own) or [0]
        before = snapshot(bm)
        can = bm.can_allocate(tokens)
        got = bm.allocate(tokens)
        assert (got is not None) == can
        if got is None:
            assert snapshot(bm) == before
            return
        assert len(got.block_ids) == -(-len(tokens) // bs)
        assert got.num_cached_tokens % bs == 0 and got.num_cached_tokens < len(tokens)
        self.seqs.append(_Seq(list(got.block_ids), list(tokens), got.num_cached_tokens))

    @precondition(lambda self: self.seqs)
    @rule(data=st.data())
    def fork(self, data):
        seq = data.draw(st.sampled_from(self.seqs))
        self.seqs.append(_Seq(self.bm.fork(seq.table), list(seq.tokens), seq.computed))

    @precondition(lambda self: self.seqs)
    @rule(data=st.data(), n=st.integers(1, 20), new=st.integers(0, 2))
    def step_one(self, data, n, new):
        self._step(data.draw(st.sampled_from(self.seqs)), n, new)

    @precondition(lambda self: self.seqs)
    @rule(n=st.integers(1, 20), new=st.integers(0, 2))
    def step_all(self, n, new):
        for seq in self.seqs:
            self._step(seq, n, new)

    def _step(self, seq: _Seq, n: int, new: int) -> None:
        """Compute up to n pending prompt tokens, or decode one new token; then commit."""
        bm = self.bm
        tokens = seq.tokens if seq.computed < len(seq.tokens) else seq.tokens + [new]
        q = min(n, len(tokens) - seq.computed)
        before, table_before = snapshot(bm), list(seq.table)
        can = bm.can_append(seq.table, seq.computed, q)
        copies = bm.append_slots(seq.table, seq.computed, q)
        assert (copies is not None) == can
        if copies is None:
            assert snapshot(bm) == before and seq.table == table_before
            return
        for src, dst in copies:  # what the model runner does before the forward
            self.kv[dst] = list(self.kv[src])
        for p in range(seq.computed, seq.computed + q):
            self.kv[seq.table[p // bm.block_size]][p % bm.block_size] = tuple(tokens[: p + 1])
        seq.tokens, seq.computed = tokens, seq.computed + q
        bm.commit(seq.table, seq.tokens, seq.computed)

    @precondition(lambda self: self.seqs)
    @rule(data=st.data())
    def free(self, data):
        seq = self.seqs.pop(data.draw(st.integers(0, len(self.seqs) - 1)))
        self.bm.free(seq.table)

    @invariant()
    def ref_counts_match_the_tables(self):
        bm = self.bm
        held = Counter(b for seq in self.seqs for b in seq.table)
        assert refs(bm) == [held[b] for b in range(bm.num_blocks)]
        queue = bm.free_queue()
        assert len(queue) == len(set(queue))
        assert set(queue) == {b for b in range(bm.num_blocks) if held[b] == 0}
        cached = sum(1 for b in queue if bm.block_hash(b) is not None)
        assert bm.stats == KVStats(bm.num_blocks, bm.num_blocks - len(queue), cached, len(queue))

    @invariant()
    def every_computed_position_holds_its_own_prefix(self):
        bs = self.bm.block_size
        for seq in self.seqs:
            for p in range(seq.computed):
                assert self.kv[seq.table[p // bs]][p % bs] == tuple(seq.tokens[: p + 1])

    @invariant()
    def registered_blocks_hold_their_tokens(self):
        registered = [b for b in range(self.bm.num_blocks) if self.bm.block_hash(b) is not None]
        assert len({self.bm.block_hash(b) for b in registered}) == len(registered)
        for b in registered:
            slots = self.kv[b]
            assert None not in slots and slots == [slots[-1][: len(s)] for s in slots]
            assert tuple(s[-1] for s in slots) == self.bm.block_tokens(b)

    def teardown(self):
        if self.bm is not None:
            assert_no_leaks(self.bm, *(seq.table for seq in self.seqs))


@pytest.mark.parametrize("weak_hash", [False, True], ids=["python_hash", "colliding_hash"])
def test_random_operations_keep_the_invariants(weak_hash, monkeypatch):
    if weak_hash:  # three keys in all: collisions everywhere, and still never a wrong hit
        monkeypatch.setattr(kv_cache, "chain_hash", lambda p, t: hash((p, t)) % 3)
    run_state_machine_as_test(
        BlockManagerMachine,
        settings=settings(
            max_examples=60, stateful_step_count=40, deadline=None, derandomize=True, database=None
        ),
    )
