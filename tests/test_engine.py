"""The engine end to end on the embedded model: token-for-token agreement with Hugging Face
`generate` at temperature 0 (batched, ragged, after forks, after release-and-reuse, across block
sizes, under pool exhaustion), seeds, stop rules, logprobs, accounting, bad input, and a leak
check after every test."""

import asyncio

import pytest
import torch
from ponder.engine import Engine, SamplingParams
from ponder.engine.torch_backend.reference import ReferenceDecoder
from ponder.tasks.arith import embedded_model_path, generate

PROMPTS = [p.prompt for p in generate(6, split="heldout", seed=3, difficulty=2)] + [
    "Q: 7\n",
    "Q: 1+2*3+4*5-6\n",
]


@pytest.fixture(scope="module")
def reference():
    return ReferenceDecoder(embedded_model_path())


@pytest.fixture(scope="module")
def greedy_reference(reference):
    samples = reference.sample(PROMPTS, n=1, temperature=0.0, max_new_tokens=60)
    return [s[0].token_ids for s in samples]


def make_engine(**options):
    options.setdefault("num_blocks", 4096 // options.get("block_size", 16))  # 4096 token slots
    return Engine.from_pretrained(None, device="cpu", **options)


@pytest.fixture(scope="module", params=[1, 4, 16])
def engine(request):
    torch.set_num_threads(1)
    eng = make_engine(block_size=request.param)
    yield eng
    eng.close()


@pytest.fixture(autouse=True)
def leak_check(request):
    yield
    if "engine" in request.fixturenames:
        stats = request.getfixturevalue("engine").kv_stats
        assert stats.used == 0, f"KV blocks leaked: {stats}"


GREEDY = SamplingParams(temperature=0.0, max_tokens=60)


def expected(reference_ids, eos):
    """HF's greedy tokens as ponder reports them: EOS included unless max_tokens hit first."""
    ids = tuple(reference_ids)
    return ids + (eos,) if len(ids) < GREEDY.max_tokens else ids


def test_greedy_batch_matches_hf(engine, greedy_reference):
    outs = engine.generate(PROMPTS, GREEDY)
    got = [o.outputs[0].token_ids for o in outs]
    want = [expected(ids, engine.tokenizer.eos_token_id) for ids in greedy_reference]
    assert got == want


def test_greedy_after_fork_and_release_and_reuse(engine, greedy_reference):
    async def run():
        async with engine.search(GREEDY) as ctx:
            roots = [ctx.root(p) for p in PROMPTS[:3]]
            firsts = await ctx.extend(roots, stop=["\n"])  # one step each
            kids = [k for b in firsts for k in ctx.fork(b, 2)]
            ctx.release(firsts)  # the kids still hold the blocks
            finals = await ctx.extend(kids)
            return [ctx.tokens(b)[b.prompt_length :] for b in finals], ctx.stats

    for _ in range(2):  # the second round reuses released, still-hashed blocks
        finals, stats = asyncio.run(run())
        eos = engine.tokenizer.eos_token_id
        for i, ids in enumerate(finals):
            assert ids == expected(greedy_reference[i // 2], eos)
        assert stats.recomputed_tokens == 0


def test_greedy_forks_of_a_block_aligned_prompt_match_hf(engine, greedy_reference):
    # Every fork writes the prompt's last token into the shared last block, in place.
    bs = engine.blocks.block_size
    aligned = [i for i, p in enumerate(PROMPTS) if len(engine.encode(p)) % bs == 0]
    assert aligned  # block sizes 1, 4 and 16 each have one (prompt lengths 6 to 16)
    n4 = SamplingParams(temperature=0.0, max_tokens=GREEDY.max_tokens, n=4)
    outs = engine.generate([PROMPTS[i] for i in aligned], n4)
    eos = engine.tokenizer.eos_token_id
    for i, out in zip(aligned, outs, strict=True):
        want = expected(greedy_reference[i], eos)
        assert [c.token_ids for c in out.outputs] == [want] * 4


def test_pool_exhaustion_still_finishes_everything(greedy_reference):
    torch.set_num_threads(1)
    with make_engine(block_size=4, num_blocks=40, max_num_seqs=64) as small:
        outs = small.generate(PROMPTS * 3, GREEDY)
        assert small.core.scheduler.num_preemptions > 0
        eos = small.tokenizer.eos_token_id
        for i, out in enumerate(outs):
            assert out.outputs[0].token_ids == expected(greedy_reference[i % len(PROMPTS)], eos)
        assert small.kv_stats.used == 0


def test_seeded_samples_survive_preemption():
    """A preempted sequence recomputes its KV and must sample what it would have: the uniform
    behind its k-th new token is draw k of its seed, however many steps it took."""
    torch.set_num_threads(1)
    hard = generate(1, split="heldout", seed=5, difficulty=6)[0].prompt
    params = SamplingParams(n=12, temperature=1.5, seed=77, max_tokens=40, ignore_eos=True)
    with make_engine(block_size=4) as roomy:
        want = [c.token_ids for c in roomy.generate(hard, params)[0].outputs]
    with make_engine(block_size=4, num_blocks=60, max_num_seqs=64) as small:
        out = small.generate(hard, params)[0]
        got = [c.token_ids for c in out.outputs]
        assert small.core.scheduler.num_preemptions > 0
    assert got == want
    # Each prompt token is counted once, cached or computed, however often a draw was
    # preempted and re-admitted (its prefix-cache hits then are neither).
    m = out.metrics
    assert m["computed_prompt_tokens"] + m["cached_prompt_tokens"] == len(out.prompt_token_ids)
    assert len(set(want)) > 1  # different draws, different streams


def test_n_samples_share_the_prompt_and_seed_reproduces(engine):
    params = SamplingParams(n=16, temperature=1.0, seed=1234, max_tokens=60)
    first = engine.generate(PROMPTS[1], params)[0]
    # The prompt is computed once (or served from the cache), not once per sample.
    m = first.metrics
    assert m["computed_prompt_tokens"] + m["cached_prompt_tokens"] == len(first.prompt_token_ids)
    again = engine.generate([PROMPTS[0], PROMPTS[1], PROMPTS[2]], params)[1]
    assert [c.token_ids for c in first.outputs] == [c.token_ids for c in again.outputs]
    hard = generate(1, split="heldout", seed=5, difficulty=6)[0].prompt
    varied = engine.generate(hard, SamplingParams(n=16, temperature=1.5, seed=1, max_tokens=60))
    assert len({c.token_ids for c in varied[0].outputs}) > 1  # sampling, not 16 copies


def test_cross_request_prefix_cache_hit(engine):
    prompt = PROMPTS[1] * 3  # long enough for full blocks at every block size
    a = engine.generate(prompt, GREEDY)[0]
    b = engine.generate(prompt, GREEDY)[0]
    assert b.num_cached_tokens > 0 and b.num_cached_tokens >= a.num_cached_tokens
    assert a.outputs[0].token_ids == b.outputs[0].token_ids


def test_stop_strings_logprobs_and_reasons(engine, reference):
    params = SamplingParams(temperature=0.0, stop=["\n"], logprobs=2, max_tokens=60)
    out = engine.generate(PROMPTS[0], params)[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == "\n"
    assert "\n" not in out.text and out.token_ids[-1] == engine.encode("\n")[-1]
    # Logprobs equal HF's log-softmax along the same tokens.
    ids = torch.tensor([engine.encode(PROMPTS[0]) + out.token_ids])
    with torch.inference_mode():
        logits = reference.model(ids).logits[0].log_softmax(-1)
    start = len(engine.encode(PROMPTS[0]))
    for i, (tok, entry) in enumerate(zip(out.token_ids, out.logprobs, strict=True)):
        assert entry[tok].logprob == pytest.approx(logits[start - 1 + i, tok].item(), abs=1e-4)
        assert entry[tok].rank == 1  # greedy picks the top token
    short = engine.generate(PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=3))[0]
    assert short.outputs[0].finish_reason == "length" and len(short.outputs[0].token_ids) == 3


def test_bad_input_is_a_clear_error(engine):
    with pytest.raises(ValueError, match="empty"):
        engine.generate([[]], GREEDY)
    with pytest.raises(ValueError, match="at most"):
        engine.generate("1" * 5000, GREEDY)
    with pytest.raises(ValueError, match="vocabulary"):
        engine.generate([[1, 99999]], GREEDY)

    async def extend_released():
        async with engine.search(GREEDY) as ctx:
            root = ctx.root(PROMPTS[0])
            ctx.release([root])
            ctx.release([root])  # idempotent
            await ctx.extend([root])

    with pytest.raises(ValueError, match="released"):
        asyncio.run(extend_released())


def test_update_weights_changes_outputs_and_drops_stale_prefixes():
    from transformers import AutoModelForCausalLM

    eng = make_engine(block_size=4)
    try:
        prompt = PROMPTS[1] * 3
        before = eng.generate(prompt, GREEDY)[0]
        hf = AutoModelForCausalLM.from_pretrained(embedded_model_path())
        state = {k: v.clone() for k, v in hf.state_dict().items()}
        eng.update_weights(state)  # the same weights: same tokens, but recomputed prefixes
        same = eng.generate(prompt, GREEDY)[0]
        assert same.outputs[0].token_ids == before.outputs[0].token_ids
        assert same.num_cached_tokens == 0
        torch.manual_seed(0)
        noisy = {k: v + 0.5 * torch.randn_like(v) for k, v in state.items()}
        eng.update_weights(noisy)
        changed = eng.generate(prompt, GREEDY)[0]
        assert changed.outputs[0].token_ids != before.outputs[0].token_ids
        with pytest.raises(ValueError, match="no tensor"):
            eng.update_weights({k: v for k, v in state.items() if "q_proj" not in k})

        async def hold_blocks() -> None:
            async with eng.search(GREEDY) as ctx:
                await ctx.extend([ctx.root(prompt)], max_tokens=2)
                with pytest.raises(RuntimeError, match="idle engine"):
                    await asyncio.to_thread(eng.update_weights, state)

        asyncio.run(hold_blocks())
        assert eng.kv_stats.used == 0
    finally:
        eng.close()
