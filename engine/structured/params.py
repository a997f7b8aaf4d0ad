"""StructuredOutputsParams: what a constrained request's output must match, with vLLM's names.

    SamplingParams(structured_outputs=StructuredOutputsParams(json=schema))
    StructuredOutputsParams(regex=r"A: -?[0-9]+")
    StructuredOutputsParams(choice=["yes", "no"])
    StructuredOutputsParams(grammar=lark_text)          # llguidance (Lark) or xgrammar (EBNF)
    StructuredOutputsParams(json_object=True)           # any JSON object

Exactly one constraint per request, as in vLLM (`vllm.sampling_params.StructuredOutputsParams`,
which replaced `GuidedDecodingParams`). A frozen value object validated on construction: a
malformed regex or schema is a ValueError here, in the caller's thread, never in the engine
loop. The JSON schema is stored as canonical JSON text so the object is hashable (compiled
grammars are cached by it). `from_response_format` maps an OpenAI `response_format` dict;
`to_vllm` gives the keyword arguments of vLLM's own class, so other backends take the same
request. It compiles nothing and knows no grammar library.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Features a regex engine built on finite automata (all three backends) cannot match.
_NON_REGULAR = re.compile(r"\(\?<?[=!]|\\[1-9]|\\k<")
_KINDS = ("json", "regex", "choice", "grammar", "json_object")


@dataclass(frozen=True, slots=True)
class StructuredOutputsParams:
    json: str | Mapping | bool | None = None  # a JSON schema (dict or JSON text)
    regex: str | None = None
    choice: tuple[str, ...] | None = None
    grammar: str | None = None
    json_object: bool | None = None

    def __post_init__(self) -> None:
        chosen = [k for k in _KINDS if getattr(self, k) not in (None, False)]
        if len(chosen) != 1:
            raise ValueError(
                "StructuredOutputsParams: set exactly one of json, regex, choice, grammar, "
                f"json_object; got {chosen or 'none'}"
            )
        if self.json is not None:
            object.__setattr__(self, "json", _canonical_schema(self.json))
        if self.regex is not None:
            _check_regex(self.regex)
        if self.choice is not None:
            object.__setattr__(self, "choice", _check_choice(self.choice))
        if self.grammar is not None and not (
            isinstance(self.grammar, str) and self.grammar.strip()
        ):
            raise ValueError(f"StructuredOutputsParams: grammar must be text, got {self.grammar!r}")
        if self.json_object not in (None, True, False):
            raise ValueError(
                f"StructuredOutputsParams: json_object must be a bool, got {self.json_object!r}"
            )

    @property
    def kind(self) -> str:
        """Which constraint is set: 'json', 'regex', 'choice', 'grammar' or 'json_object'."""
        return next(k for k in _KINDS if getattr(self, k) not in (None, False))

    @property
    def schema(self) -> dict | bool | None:
        """The JSON schema as a Python value (None unless `json` is set)."""
        return None if self.json is None else json.loads(self.json)

    def to_vllm(self) -> dict[str, Any]:
        """Keyword arguments for `vllm.sampling_params.StructuredOutputsParams`."""
        value = self.schema if self.kind == "json" else getattr(self, self.kind)
        return {self.kind: list(value) if self.kind == "choice" else value}


def _canonical_schema(schema) -> str:
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise ValueError(f"StructuredOutputsParams: json is not valid JSON: {exc}") from None
    if not isinstance(schema, Mapping | bool):
        raise ValueError(
            f"StructuredOutputsParams: a JSON schema is an object or a bool, got {schema!r}"
        )
    if isinstance(schema, Mapping):
        _check_schema_types(schema)
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


_JSON_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}


def _check_schema_types(schema: Mapping, path: str = "#") -> None:
    """Catch the commonest schema mistake (an unknown `type`) with the path to it."""
    kinds = schema.get("type")
    for kind in kinds if isinstance(kinds, list) else [kinds] if kinds is not None else []:
        if kind not in _JSON_TYPES:
            raise ValueError(
                f"StructuredOutputsParams: unknown JSON schema type {kind!r} at {path}; "
                f"known: {sorted(_JSON_TYPES)}"
            )
    for key, sub in schema.get("properties", {}).items():
        if isinstance(sub, Mapping):
            _check_schema_types(sub, f"{path}/properties/{key}")
    if isinstance(schema.get("items"), Mapping):
        _check_schema_types(schema["items"], f"{path}/items")


def _check_regex(regex) -> None:
    if not isinstance(regex, str) or not regex:
        raise ValueError(f"StructuredOutputsParams: regex must be a non-empty str, got {regex!r}")
    try:
        re.compile(regex)
    except re.error as exc:
        raise ValueError(f"StructuredOutputsParams: invalid regex {regex!r}: {exc}") from None
    if _NON_REGULAR.search(regex):
        raise ValueError(
            f"StructuredOutputsParams: regex {regex!r} uses lookaround or a backreference, "
            "which token-mask automata cannot match"
        )


def _check_choice(choice) -> tuple[str, ...]:
    if isinstance(choice, str) or not choice:
        raise ValueError(
            f"StructuredOutputsParams: choice must be a non-empty list of strings, got {choice!r}"
        )
    choice = tuple(choice)
    if not all(isinstance(c, str) and c for c in choice):
        raise ValueError(f"StructuredOutputsParams: choices must be non-empty str, got {choice!r}")
    return choice


def from_response_format(response_format: Mapping | None) -> StructuredOutputsParams | None:
    """Map an OpenAI `response_format` to params (None for absent or `{"type": "text"}`).

    `{"type": "json_object"}` -> json_object=True; `{"type": "json_schema", "json_schema":
    {"name": ..., "schema": {...}, "strict": ...}}` -> json=schema. ValueError otherwise."""
    if response_format is None:
        return None
    if not isinstance(response_format, Mapping):
        raise ValueError(f"response_format must be an object, got {response_format!r}")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return StructuredOutputsParams(json_object=True)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping) or "schema" not in spec:
            raise ValueError(
                "response_format of type json_schema needs json_schema.schema, got "
                f"{response_format!r}"
            )
        return StructuredOutputsParams(json=spec["schema"])
    raise ValueError(
        f"response_format type {kind!r} is not supported; use text, json_object or json_schema"
    )
