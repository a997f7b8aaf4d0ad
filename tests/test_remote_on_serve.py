"""The remote backend against ponder's own server (`ponder serve`, in process, free port).

The server takes token-id prompts and, asked with vLLM's `return_token_ids`, returns each
choice's generated ids and its `stop_reason`, so a search over HTTP sees exactly the tokens the
server's engine produced. Without them a client re-encodes the text, which is exact on the
embedded model's character tokenizer: both are checked here, with a step-wise search run end to
end through the remote backend.
"""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("fastapi", reason="ponder serve needs the server extra")
httpx = pytest.importorskip("httpx", reason="the remote backend needs httpx (extra: remote)")

from ponder.engine.remote_backend import RemoteBackend  # noqa: E402
from ponder.engine.sampling_params import SamplingParams  # noqa: E402
from ponder.strategies import SearchRequest, run  # noqa: E402
from ponder.tasks.registry import get_task, make_verifier  # noqa: E402
from serve_helpers import API_KEY, running_server, server_config  # noqa: E402

PROMPT = "Q: 2+3*4\n"


@pytest.fixture(scope="module")
def server():
    with running_server(server_config(max_n=8, max_tokens=512)) as running:
        yield running


def complete(server, **body) -> dict:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"model": "ponder-embedded", "temperature": 0, "max_tokens": 40, **body}
    response = httpx.post(server.url + "/v1/completions", json=body, headers=headers)
    response.raise_for_status()
    return response.json()


def test_token_id_prompt_returns_token_ids_and_stop_reason(server):
    ids = list(server.engine.encode(PROMPT))
    by_text = complete(server, prompt=PROMPT, stop=["\n"], return_token_ids=True)
    by_ids = complete(server, prompt=ids, stop=["\n"], return_token_ids=True)
    choice = by_ids["choices"][0]
    assert choice == {**by_text["choices"][0]}  # the same prompt, as text or as ids
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == "\n"
    # The text omits the stop string (OpenAI's convention); the ids keep the token that made it.
    assert server.engine.decode(choice["token_ids"]) == choice["text"] + "\n"
    eos = complete(server, prompt=ids, return_token_ids=True)["choices"][0]
    assert eos["finish_reason"] == "stop" and eos["stop_reason"] is None  # EOS
    assert "token_ids" not in complete(server, prompt=ids)["choices"][0]  # only when asked


def test_re_encoding_round_trips_on_the_char_tokenizer(server):
    backend = RemoteBackend(server.url, api_key=API_KEY)
    choice = complete(server, prompt=PROMPT, stop=["\n"], return_token_ids=True)["choices"][0]
    text = choice["text"] + choice["stop_reason"]
    assert list(backend.tokenizer(text, add_special_tokens=False).input_ids) == choice["token_ids"]


def test_stepwise_search_over_http_matches_the_engine(server):
    """Greedy steps through the remote backend equal the engine's own, token for token."""
    backend = RemoteBackend(server.url, api_key=API_KEY)

    async def steps(make_ctx):
        async with make_ctx(SamplingParams(temperature=0.0, max_tokens=40), seed=0) as ctx:
            branch, texts = ctx.root(PROMPT), []
            while not branch.done:
                (branch,) = await ctx.extend([branch], stop=["\n"])
                texts.append((ctx.text(branch), branch.finish_reason))
            return texts, ctx.tokens(branch)

    remote = asyncio.run(steps(backend.search))
    local = asyncio.run(steps(server.engine.search))
    assert remote == local and remote[0][-1][1] == "eos"
    assert [reason for _, reason in remote[0][:-1]] == ["stop"] * (len(remote[0]) - 1)


def test_particle_filter_through_the_remote_backend(server):
    backend = RemoteBackend(server.url, api_key=API_KEY)
    task = get_task("arith", level=2)
    item = task.items(1, seed=5)[0]
    request = SearchRequest(
        prompt=item.prompt,
        verifier=make_verifier("arith_step"),
        n=4,
        seed=1,
        step_delimiter=task.step_delimiter,
        max_steps=task.max_steps,
        max_step_tokens=task.max_step_tokens,
        extract_answer=task.extract_answer,
    )
    result = asyncio.run(run(backend, "particle", request))
    assert result.answer is not None and result.stats["samples"] >= 4
    assert result.stats["recomputed_tokens"] + result.stats["cached_prompt_tokens"] > 0
