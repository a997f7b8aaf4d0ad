"""Constrained output through `ponder serve` with the official openai client: OpenAI's
`response_format` (json_object, json_schema, and the client's own pydantic `parse`), vLLM's
`structured_outputs` and older `guided_*` fields, a search under a constraint, and a 400 naming
the problem for each kind of invalid constraint."""

from __future__ import annotations

import json
import re

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests.serve_helpers import running_server, server_config
from tests.structured_cases import SCHEMAS

PROMPT = "Q: 12+7*3-5\n"
MODEL = "ponder-embedded"
CHAT = [{"role": "user", "content": PROMPT}]


@pytest.fixture(scope="module")
def server():
    with running_server(server_config()) as running:
        yield running


@pytest.fixture(autouse=True)
def no_leaks(server):
    yield
    assert server.engine.live_handles == 0 and server.engine.kv_stats.used == 0


def test_response_format_json_schema_and_json_object(server):
    schema = SCHEMAS["ranges"]
    out = server.client().chat.completions.create(
        model=MODEL, messages=CHAT, n=3, seed=0, max_tokens=100,
        response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
    )  # fmt: skip
    for choice in out.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), schema)
    out = server.client().chat.completions.create(
        model=MODEL, messages=CHAT, temperature=0, max_tokens=100,
        response_format={"type": "json_object"},
    )  # fmt: skip
    assert isinstance(json.loads(out.choices[0].message.content), dict)


def test_the_clients_pydantic_parse(server):
    class Answer(BaseModel):
        value: int = Field(ge=0, le=99)
        sure: bool

    out = server.client().chat.completions.parse(
        model=MODEL, messages=CHAT, seed=1, max_tokens=100, response_format=Answer
    )
    parsed = out.choices[0].message.parsed
    assert isinstance(parsed, Answer) and 0 <= parsed.value <= 99


def test_vllm_fields_on_completions_and_chat(server):
    client = server.client()
    rx = r"A: -?[0-9]{1,3}"
    out = client.completions.create(
        model=MODEL, prompt=PROMPT, n=4, seed=0, max_tokens=32,
        extra_body={"structured_outputs": {"regex": rx}},
    )  # fmt: skip
    assert all(re.fullmatch(rx, c.text) for c in out.choices)
    out = client.completions.create(
        model=MODEL, prompt=PROMPT, n=4, seed=0, temperature=2.0, max_tokens=8,
        extra_body={"guided_choice": ["yes", "no"]},
    )  # fmt: skip
    assert {c.text for c in out.choices} <= {"yes", "no"}
    out = client.chat.completions.create(
        model=MODEL, messages=CHAT, seed=0, max_tokens=64,
        extra_body={"guided_json": SCHEMAS["flat"]},
    )  # fmt: skip
    jsonschema.validate(json.loads(out.choices[0].message.content), SCHEMAS["flat"])
    lark = 'start: "A: " NUM\nNUM: /[0-9]{1,2}/'
    for field in ({"guided_grammar": lark}, {"structured_outputs": {"grammar": lark}}):
        out = client.completions.create(
            model=MODEL, prompt=PROMPT, seed=0, max_tokens=16, extra_body=field
        )
        assert re.fullmatch(r"A: [0-9]{1,2}", out.choices[0].text)


def test_a_search_under_a_constraint(server):
    rx = r"([^A\n][^\n]*\n)*A: -?[0-9]{1,4}"
    search = {"ponder": {"strategy": "particle", "n": 4}, "structured_outputs": {"regex": rx}}
    out = server.client().chat.completions.create(
        model=MODEL, messages=CHAT, seed=0, max_tokens=128, temperature=1.5, extra_body=search
    )
    candidates = out.model_extra["ponder"]["searches"][0]["candidates"]
    finished = [c["text"] for c in candidates if c["finished"]]
    assert finished and all(re.fullmatch(rx, t) for t in finished)


@pytest.mark.parametrize(
    "body, param, message",
    [
        ({"response_format": {"type": "xml"}}, "response_format", "not supported"),
        ({"response_format": {"type": "json_schema"}}, "response_format", "json_schema.schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "x"}}}},
            "response_format",
            "unknown JSON schema type 'x'",
        ),
        ({"structured_outputs": {"regex": "(ab"}}, "structured_outputs", "invalid regex"),
        ({"structured_outputs": {"jsn": {}}}, "structured_outputs", "unknown keys"),
        ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs", "one"),
        ({"guided_regex": "a(?=b)"}, "guided_regex", "lookaround"),
        ({"guided_choice": []}, "guided_choice", "non-empty"),
        ({"guided_grammar": "start: nope"}, "guided_grammar", "llguidance"),
        ({"guided_regex": "a", "guided_choice": ["b"]}, "guided_choice", "at most one"),
    ],
)
def test_an_invalid_constraint_is_a_400_naming_it(server, body, param, message):
    with pytest.raises(openai.BadRequestError) as caught:
        server.client().completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=8, extra_body=body
        )
    error = caught.value.body
    assert message in error["message"] and error["param"] == param, error
