"""The model-name convention, for clients that cannot send the `ponder` body field.

    <served model>                                    plain sampling
    <served model>:<strategy>                         a search with the strategy's defaults
    <served model>:<strategy>?n=16&tau=0.5&verifier=arith_step&budget.max_tokens=4000

After `?` come `&`-separated key=value pairs (URL-encoded). Keys that name a `ponder` field
(n, verifier, max_steps, max_step_tokens, step_delimiter, aggregation, reference) set it;
`budget.<limit>` sets a budget limit; every other key is a strategy option. Values parse as JSON
when they do (`0.5`, `true`), else stay strings (`arith_step`), as on the command line. The
parsed spec goes through the same validation as the body field (an unknown option is a 400).
Unlike optillm's `strategy-model` prefix, the model stays a prefix, the strategy is explicit,
and every option is reachable.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from ponder.apps.serve.errors import APIError, bad_request

SPEC_FIELDS = frozenset(
    {"n", "verifier", "max_steps", "max_step_tokens", "step_delimiter", "aggregation", "reference"}
)


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_model(name: str, served: str) -> dict | None:
    """The search spec a model name asks for (a dict for PonderSpec), or None for plain
    sampling. 404 for a model this server does not serve, 400 for a malformed suffix."""
    if name == served:
        return None
    base, sep, rest = name.partition(":")
    if base != served or not sep:
        raise APIError(
            404,
            f"model {name!r} does not exist; this server serves {served!r} "
            f"(add ':<strategy>?key=value&...' to search)",
            param="model",
            code="model_not_found",
        )
    strategy, _, query = rest.partition("?")
    if not strategy:
        raise bad_request(f"model {name!r}: no strategy after ':'", param="model")
    spec: dict = {"strategy": strategy, "options": {}}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise bad_request(f"model {name!r}: expected key=value pairs after '?'", "model") from None
    for key, raw in pairs:
        value = _value(raw)
        if key in SPEC_FIELDS:
            spec[key] = value
        elif key.startswith("budget."):
            spec.setdefault("budget", {})[key.removeprefix("budget.")] = value
        elif key:
            spec["options"][key] = value
        else:
            raise bad_request(f"model {name!r}: an empty option name", param="model")
    return spec
