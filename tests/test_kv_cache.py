"""Exact-state tests of the block manager: block ids, ref counts, hashes, free-queue order,
copy-on-write, prefix hits, eviction, and a leak check at the end of every test."""

import random
from dataclasses import dataclass

import pytest
from ponder.engine.torch_backend.kv_cache import BlockManager


def assert_all_free(bm: BlockManager) -> None:
    stats = bm.stats
    assert stats.used == 0 and stats.free == stats.total
    assert all(bm.ref_count(b) == 0 for b in range(bm.num_blocks))


def test_fresh_allocation_takes_blocks_in_queue_order():
    bm = BlockManager(8, 4)
    a = bm.allocate(list(range(10)))
    assert a.block_ids == (0, 1, 2) and a.num_cached_tokens == 0
    assert [bm.ref_count(b) for b in range(4)] == [1, 1, 1, 0]
    assert bm.free_queue() == [3, 4, 5, 6, 7]
    bm.free(a.block_ids)
    assert bm.free_queue() == [3, 4, 5, 6, 7, 2, 1, 0]  # tail freed first: evicted first
    assert_all_free(bm)


@pytest.mark.parametrize("bs", [1, 2, 4, 16])
def test_prefix_hit_after_commit_shares_blocks(bs):
    bm = BlockManager(64, bs)
    prompt = list(range(100, 100 + 3 * bs + 1))  # three full blocks and one token
    a = bm.allocate(prompt)
    assert a.num_cached_tokens == 0
    bm.commit(a.block_ids, prompt, len(prompt))
    assert all(bm.block_hash(b) is not None for b in a.block_ids[:3])
    if bs > 1:
        assert bm.block_hash(a.block_ids[3]) is None  # partial: never hashed
    b = bm.allocate(prompt)
    assert b.block_ids[:3] == a.block_ids[:3] and b.block_ids[3] != a.block_ids[3]
    assert b.num_cached_tokens == 3 * bs
    assert [bm.ref_count(x) for x in a.block_ids] == [2, 2, 2, 1]
    bm.free(a.block_ids)
    bm.free(b.block_ids)
    assert_all_free(bm)


def test_partial_prefix_hit_and_divergence():
    bm = BlockManager(16, 2)
    a = bm.allocate([1, 2, 3, 4, 5, 6, 7])
    bm.commit(a.block_ids, [1, 2, 3, 4, 5, 6, 7], 7)
    b = bm.allocate([1, 2, 3, 9, 5, 6, 7])  # diverges in the second block
    assert b.num_cached_tokens == 2 and b.block_ids[0] == a.block_ids[0]
    assert b.block_ids[1] not in a.block_ids
    bm.free(a.block_ids)
    bm.free(b.block_ids)
    assert_all_free(bm)


def test_a_fully_cached_prompt_still_computes_its_last_block():
    bm = BlockManager(8, 2)
    tokens = [5, 6, 7, 8]
    a = bm.allocate(tokens)
    bm.commit(a.block_ids, tokens, 4)
    b = bm.allocate(tokens)
    assert b.num_cached_tokens == 2  # the last block is not reused: one token must be computed
    assert b.block_ids[0] == a.block_ids[0] and b.block_ids[1] != a.block_ids[1]
    bm.free(a.block_ids)
    bm.free(b.block_ids)
    assert_all_free(bm)


def test_released_blocks_keep_their_hash_and_hit_again():
    bm = BlockManager(6, 2)
    tokens = [1, 2, 3, 4, 5]
    a = bm.allocate(tokens)
    bm.commit(a.block_ids, tokens, 5)
    bm.free(a.block_ids)
    assert bm.stats.cached_free == 2 and bm.stats.used == 0
    b = bm.allocate(tokens)
    assert b.num_cached_tokens == 4 and b.block_ids[:2] == a.block_ids[:2]
    assert a.block_ids[0] not in bm.free_queue() and bm.ref_count(a.block_ids[0]) == 1
    bm.free(b.block_ids)
    assert_all_free(bm)


def test_lru_eviction_drops_the_oldest_hash_first():
    bm = BlockManager(4, 2)
    x = bm.allocate([1, 2, 3])
    bm.commit(x.block_ids, [1, 2, 3], 3)
    bm.free(x.block_ids)  # queue: 2, 3, then x's tail block 1, then x's head block 0
    assert bm.free_queue() == [2, 3, 1, 0]
    y = bm.allocate([9, 9, 9, 9, 9, 9, 9])  # needs 4 blocks: evicts everything
    assert y.block_ids == (2, 3, 1, 0) and y.num_cached_tokens == 0
    assert bm.block_hash(0) is None
    bm.free(y.block_ids)
    z = bm.allocate([1, 2, 3])
    assert z.num_cached_tokens == 0  # the old prefix was evicted
    bm.free(z.block_ids)
    assert_all_free(bm)


def test_fork_shares_and_copy_on_write_on_partial_last_block():
    bm = BlockManager(8, 4)
    parent = list(bm.allocate([1, 2, 3, 4, 5, 6]).block_ids)  # blocks 0 (full), 1 (2 of 4)
    kid = bm.fork(parent)
    assert kid == parent and [bm.ref_count(b) for b in parent] == [2, 2]
    copies = bm.append_slots(kid, 6, 1)
    assert copies == [(1, 2)] and kid == [0, 2]
    assert [bm.ref_count(b) for b in (0, 1, 2)] == [2, 1, 1]
    assert bm.append_slots(parent, 6, 1) == []  # block 1 is no longer shared
    assert bm.append_slots(kid, 7, 2) == [] and kid == [0, 2, 3]  # crosses a boundary
    bm.free(parent)
    bm.free(kid)
    assert_all_free(bm)


def test_no_copy_when_the_shared_block_is_full():
    bm = BlockManager(8, 2)
    parent = list(bm.allocate([1, 2, 3, 4]).block_ids)
    kid = bm.fork(parent)
    assert bm.append_slots(kid, 4, 1) == [] and kid == [0, 1, 2]
    bm.free(parent)
    bm.free(kid)
    assert_all_free(bm)


def test_forks_of_a_block_aligned_prompt_share_every_block_and_copy_none():
    # A prefill computes all but the last prompt token; each fork computes that token again.
    bm = BlockManager(8, 4)
    prompt = [10, 11, 12, 13, 14, 15, 16, 17]  # two full blocks
    prefill = list(bm.allocate(prompt[:-1]).block_ids)
    assert prefill == [0, 1]
    kids = [bm.fork(prefill) for _ in range(3)]
    bm.free(prefill)
    for kid in kids:  # the shared last block's last slot holds the same token for every fork
        assert bm.append_slots(kid, 7, 1, prompt) == [] and kid == [0, 1]
    assert [bm.ref_count(b) for b in (0, 1)] == [3, 3]
    for k, kid in enumerate(kids):  # generated tokens go to blocks each fork needs anyway
        tokens = prompt + [20 + k]
        assert bm.append_slots(kid, 8, 1, tokens) == [] and kid == [0, 1, 2 + k]
    assert bm.stats.used == 2 + 3  # the prompt's blocks once, one new block per fork
    for kid in kids:
        bm.free(kid)
    assert_all_free(bm)


def test_a_different_token_in_an_agreed_slot_copies():
    bm = BlockManager(8, 4)
    parent = list(bm.allocate([1, 2, 3, 4, 5]).block_ids)  # block 1 holds position 4 only
    a, b = bm.fork(parent), bm.fork(parent)
    assert bm.append_slots(a, 5, 1, [1, 2, 3, 4, 5, 6]) == []  # claims slot 5 for token 6
    assert bm.append_slots(b, 5, 1, [1, 2, 3, 4, 5, 7]) == [(1, 2)] and b == [0, 2]
    assert bm.append_slots(parent, 5, 1, [1, 2, 3, 4, 5, 6]) == []  # the same token: in place
    assert bm.append_slots(a, 6, 1, [1, 2, 3, 4, 5, 6, 8]) == []  # the first writer claims
    assert bm.append_slots(parent, 6, 1, [1, 2, 3, 4, 5, 6, 9]) == [(1, 3)] and parent == [0, 3]
    assert bm.append_slots(a, 7, 1, [1, 2, 3, 4, 5, 6, 8, 0]) == []  # no longer shared
    for t in (parent, a, b):
        bm.free(t)
    assert_all_free(bm)


def check_pool(bm: BlockManager, slots: dict, live: list) -> None:
    """Every invariant of the pool against a model of its physical slots: ref counts equal the
    live tables' references, the free queue holds exactly the unreferenced blocks, every table
    reads its own tokens back, every hashed block holds the tokens its hash names (chained
    along each table), and the hash map points only at blocks that carry that hash."""
    bs = bm.block_size
    refs = [0] * bm.num_blocks
    for seq in live:
        for b in seq.table:
            refs[b] += 1
    assert refs == [bm.ref_count(b) for b in range(bm.num_blocks)]
    free = bm.free_queue()
    assert len(free) == len(set(free)) == bm.num_free_blocks
    assert set(free) == {b for b in range(bm.num_blocks) if refs[b] == 0}
    for seq in live:
        read = [slots[(seq.table[p // bs], p % bs)] for p in range(seq.computed)]
        assert read == seq.tokens[: seq.computed]
        parent = None
        for i in range(seq.hashed):  # the leading blocks this table counts as hashed
            block = seq.table[i]
            content = tuple(slots[(block, o)] for o in range(bs))
            assert bm.block_hash(block) == bm._chain(parent, content), (i, seq)
            parent = bm.block_hash(block)
    for block in range(bm.num_blocks):
        if bm.block_hash(block) is not None:  # in use or free: a hit would read these slots
            content = tuple(slots.get((block, o)) for o in range(bs))
            assert bm._tokens[block] == content, block
    for h, block in bm._by_hash.items():
        assert bm.block_hash(block) == h


@dataclass
class Live:
    table: list[int]
    tokens: list[int]
    computed: int  # positions with KV
    hashed: int  # leading blocks committed (what the scheduler keeps as num_hashed_blocks)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("bs", [1, 3, 4])
def test_in_place_writes_and_commits_keep_every_invariant(bs, seed):
    """A model of the physical slots under allocate (with prefix hits), fork, one-token
    appends (agreed slots in place, copy-on-write otherwise), commit, free and a prefix-cache
    reset, with every invariant checked after every operation (check_pool)."""
    rng = random.Random(1000 * bs + seed)
    bm = BlockManager(48, bs)
    slots: dict[tuple[int, int], int] = {}  # (block, offset) -> token whose KV is there
    live: list[Live] = []

    def write(seq: Live, start: int, end: int, copies) -> None:
        for src, dst in copies:
            for o in range(bs):
                if (src, o) in slots:
                    slots[(dst, o)] = slots[(src, o)]
        for pos in range(start, end):
            slots[(seq.table[pos // bs], pos % bs)] = seq.tokens[pos]

    for _ in range(500):
        op = rng.random()
        if op < 0.12 or not live:
            tokens = [rng.randint(0, 2) for _ in range(rng.randint(2, 12))]
            got = bm.allocate(tokens[:-1])
            if got is not None:
                seq = Live(list(got.block_ids), tokens, len(tokens) - 1, 0)
                seq.hashed = got.num_cached_tokens // bs
                write(seq, got.num_cached_tokens, seq.computed, [])
                live.append(seq)
        elif op < 0.32:
            src = rng.choice(live)
            live.append(Live(bm.fork(src.table), list(src.tokens), src.computed, src.hashed))
        elif op < 0.72:
            seq = rng.choice(live)
            if seq.computed == len(seq.tokens):
                seq.tokens.append(rng.randint(0, 2))  # sampled: the new token is pending
            copies = bm.append_slots(seq.table, seq.computed, 1, seq.tokens)
            if copies is not None:
                write(seq, seq.computed, seq.computed + 1, copies)
                seq.computed += 1
        elif op < 0.86:
            seq = rng.choice(live)
            seq.hashed = bm.commit(seq.table, seq.tokens, seq.computed, seq.hashed)
        elif op < 0.98:
            bm.free(live.pop(rng.randrange(len(live))).table)
        else:
            bm.reset_prefix_cache()
        check_pool(bm, slots, live)
    for seq in live:
        bm.free(seq.table)
    assert_all_free(bm)


def test_exhaustion_returns_none_without_state_change():
    bm = BlockManager(3, 2)
    a = list(bm.allocate([1, 2, 3, 4, 5]).block_ids)
    before = (bm.free_queue(), [bm.ref_count(b) for b in range(3)])
    assert not bm.can_allocate([7, 8, 9])
    assert bm.allocate([7, 8, 9]) is None
    assert not bm.can_append(a, 6, 1)
    assert bm.append_slots(a, 6, 1) is None
    kid = bm.fork(a)
    assert bm.append_slots(kid, 5, 1) is None  # CoW needs a block there is none of
    bm.free(kid)
    assert (bm.free_queue(), [bm.ref_count(b) for b in range(3)]) == before
    bm.free(a)
    assert_all_free(bm)


def test_hash_collisions_never_hit(monkeypatch):
    bm = BlockManager(8, 2)
    monkeypatch.setattr(bm, "_chain", lambda parent, tokens: 42)  # every block collides
    a = bm.allocate([1, 2, 3])
    bm.commit(a.block_ids, [1, 2, 3], 3)
    b = bm.allocate([7, 8, 9])
    assert b.num_cached_tokens == 0 and b.block_ids[0] != a.block_ids[0]
    bm.commit(b.block_ids, [7, 8, 9], 3)
    c = bm.allocate([1, 2, 3])
    assert c.num_cached_tokens == 2 and c.block_ids[0] == a.block_ids[0]
    for t in (a, b, c):
        bm.free(t.block_ids)
    assert_all_free(bm)


def test_invariant_errors():
    with pytest.raises(ValueError, match="num_blocks"):
        BlockManager(0, 4)
    with pytest.raises(ValueError, match="block_size"):
        BlockManager(4, 0)
    bm = BlockManager(4, 2)
    a = bm.allocate([1, 2])
    bm.free(a.block_ids)
    with pytest.raises(RuntimeError, match="double free"):
        bm.free(a.block_ids)
    with pytest.raises(ValueError, match="empty"):
        bm.allocate([])
    with pytest.raises(ValueError, match="empty"):
        bm.can_allocate([])
    assert_all_free(bm)


def test_bad_free_or_fork_changes_nothing():
    bm = BlockManager(6, 2)
    a = bm.allocate([1, 2, 3, 4])
    held = [bm.ref_count(b) for b in range(6)]
    free_queue = bm.free_queue()
    for bad in ([*a.block_ids, -1], [*a.block_ids, 6], [*a.block_ids, a.block_ids[0]] * 2):
        with pytest.raises(RuntimeError):
            bm.free(bad)
        assert [bm.ref_count(b) for b in range(6)] == held and bm.free_queue() == free_queue
    with pytest.raises(RuntimeError, match="nobody holds"):
        bm.fork([a.block_ids[0], free_queue[0]])
    assert [bm.ref_count(b) for b in range(6)] == held
    bm.free(a.block_ids)
    assert_all_free(bm)


def test_duplicate_content_is_hashed_once_and_not_registered():
    bm = BlockManager(8, 2)
    a = bm.allocate([1, 2, 3])
    b = bm.allocate([5, 6, 7])
    bm.commit(a.block_ids, [1, 2, 3], 3)
    # b's first block gets the same content as a's (written by a different path).
    bm.commit(b.block_ids, [1, 2, 7], 3)
    owner, dup = a.block_ids[0], b.block_ids[0]
    assert bm.block_hash(dup) == bm.block_hash(owner) is not None
    c = bm.allocate([1, 2, 9])
    assert c.block_ids[0] == owner  # lookups find the registered owner
    for t in (a, b, c):
        bm.free(t.block_ids)
    assert bm.stats.cached_free == 1  # the duplicate does not count as a reachable cache entry
    assert_all_free(bm)


@pytest.mark.parametrize("bs", [1, 3, 8])
def test_random_operations_keep_the_invariants(bs):
    rng = random.Random(bs)
    bm = BlockManager(40, bs)
    live: list[tuple[list[int], list[int], int]] = []  # (table, tokens, computed)
    for _ in range(400):
        op = rng.random()
        if op < 0.3:
            tokens = [rng.randint(0, 3) for _ in range(rng.randint(1, 12))]
            got = bm.allocate(tokens)
            if got is not None:
                bm.commit(got.block_ids, tokens, len(tokens))
                live.append((list(got.block_ids), tokens, len(tokens)))
        elif op < 0.5 and live:
            table, tokens, computed = rng.choice(live)
            live.append((bm.fork(table), list(tokens), computed))
        elif op < 0.75 and live:
            i = rng.randrange(len(live))
            table, tokens, computed = live[i]
            if bm.append_slots(table, computed, 1) is not None:
                tokens = tokens + [rng.randint(0, 3)]
                bm.commit(table, tokens, computed + 1)
                live[i] = (table, tokens, computed + 1)
        elif live:
            table, _, _ = live.pop(rng.randrange(len(live)))
            bm.free(table)
        refs = [0] * bm.num_blocks
        for table, _, _ in live:
            for b in table:
                refs[b] += 1
        assert refs == [bm.ref_count(b) for b in range(bm.num_blocks)]
        assert set(bm.free_queue()) == {b for b in range(bm.num_blocks) if refs[b] == 0}
        for h, b in bm._by_hash.items():
            assert bm.block_hash(b) == h
    for table, _, _ in live:
        bm.free(table)
    assert_all_free(bm)


def test_reset_prefix_cache_forgets_free_blocks_only():
    m = BlockManager(8, 4)
    a = m.allocate(list(range(9)))
    m.commit(a.block_ids, list(range(9)), 9)
    m.free(a.block_ids)  # three blocks free, two full ones cached
    b = m.allocate([50, 51, 52, 53, 54])
    m.commit(b.block_ids, [50, 51, 52, 53, 54], 5)  # one full block in use, hashed
    assert m.stats.cached_free == 2
    assert m.reset_prefix_cache() == 2
    assert m.stats.cached_free == 0
    assert m.allocate(list(range(9))).num_cached_tokens == 0  # the prefix is gone
    again = m.allocate([50, 51, 52, 53, 54])
    assert again.num_cached_tokens == 4  # a block in use keeps its content


def test_a_sole_holder_rewriting_a_claimed_slot_never_leaves_a_stale_cached_block():
    """Found by review: A claims slot 3 of a shared block in place, commits it to the prefix
    cache and leaves; B, now the only holder, writes another token there. The cached block must
    not keep A's identity, or a later prompt would read B's KV as A's token."""
    bm = BlockManager(8, 4)
    b = list(bm.allocate([0, 0, 1]).block_ids)
    a = bm.fork(b)
    assert bm.append_slots(a, 3, 1, [0, 0, 1, 0]) == []  # A claims slot 3 in place
    bm.commit(a, [0, 0, 1, 0], 4)
    bm.free(a)
    assert bm.append_slots(b, 3, 1, [0, 0, 1, 1]) == []  # B overwrites: sole holder
    assert bm.allocate([0, 0, 1, 0, 5]).num_cached_tokens == 0  # no stale prefix hit
