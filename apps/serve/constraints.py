"""A request's output constraint, from whichever field the client used, as one
`StructuredOutputsParams` (engine/structured/params.py), or a 400 naming the problem.

Accepted, at most one of them per request, as in vLLM's OpenAI server:
- OpenAI's `response_format`: {"type": "text" | "json_object" | "json_schema", ...};
- vLLM's `structured_outputs`: {"json": schema, "regex": ..., "choice": [...], "grammar": ...};
- vLLM's older fields: `guided_json`, `guided_regex`, `guided_choice`, `guided_grammar`.
The constraint is compiled here too (the engine caches it), so one the grammar backend rejects
is a 400 before any compute. Nothing here runs the model.
"""

from __future__ import annotations

from ponder.apps.serve.errors import bad_request
from ponder.engine.structured import StructuredOutputsParams, from_response_format

GUIDED = {
    "guided_json": "json",
    "guided_regex": "regex",
    "guided_choice": "choice",
    "guided_grammar": "grammar",
}
_KEYS = ("json", "regex", "choice", "grammar", "json_object")


def constraint_of(body) -> StructuredOutputsParams | None:
    """The body's constraint (None when it asks for none); APIError 400 when it is invalid."""
    given = _given(body)
    if len(given) > 1:
        raise bad_request(f"set at most one output constraint; got {', '.join(given)}", given[1])
    if not given:
        return None
    field = given[0]
    value = getattr(body, field)
    try:
        if field == "response_format":
            return from_response_format(value)
        if field == "structured_outputs":
            return _from_vllm(value)
        return StructuredOutputsParams(**{GUIDED[field]: value})
    except (ValueError, TypeError) as exc:
        raise bad_request(f"{field}: {exc}", field) from None


def _given(body) -> list[str]:
    fields = ("response_format", "structured_outputs", *GUIDED)
    return [name for name in fields if getattr(body, name, None) is not None]


def _from_vllm(spec: dict) -> StructuredOutputsParams:
    unknown = sorted(set(spec) - set(_KEYS))
    if unknown:
        raise ValueError(f"unknown keys {unknown}; known: {list(_KEYS)}")
    return StructuredOutputsParams(**spec)


def check_compiles(engine, body, constraint: StructuredOutputsParams | None) -> None:
    """Compile on the request's thread when the backend compiles itself (ponder's engine);
    other backends validate the constraint their own way."""
    compiler = getattr(engine, "grammars", None)
    if constraint is None or compiler is None:
        return
    try:
        compiler.compile(constraint)
    except ValueError as exc:
        raise bad_request(str(exc), _given(body)[0]) from None
