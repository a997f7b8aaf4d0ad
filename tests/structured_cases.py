"""JSON schemas and regexes shared by the structured-output tests and bench/structured.py.

Every string is bounded (maxLength, enum) and objects are closed, so a constrained sample of
even a weak model finishes well within its token budget; what is checked is that it parses."""

SCHEMAS = {
    "flat": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 8},
            "ok": {"type": "boolean"},
        },
        "required": ["name", "ok"],
        "additionalProperties": False,
    },
    "ranges": {
        "type": "object",
        "properties": {
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            # A "number" leaves the fraction unbounded: a weak model writes 1.000... until
            # max_tokens (bench/structured.py counts it); integers bound every digit.
            "score": {"type": "integer", "minimum": -5, "maximum": 5},
        },
        "required": ["age", "score"],
        "additionalProperties": False,
    },
    "enum_array": {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
            "level": {"enum": ["low", "high", 3]},
        },
        "required": ["tags", "level"],
        "additionalProperties": False,
    },
    "nested": {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "minimum": 1, "maximum": 999},
                    "email": {"type": "string", "maxLength": 6},
                },
                "required": ["id", "email"],
                "additionalProperties": False,
            },
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
                    "required": ["n"],
                    "additionalProperties": False,
                },
                "maxItems": 2,
            },
        },
        "required": ["user", "items"],
        "additionalProperties": False,
    },
}

RANGE_FREE = ("flat", "enum_array")  # what a regex-only backend (outlines-core) can enforce

REGEXES = {
    "answer": r"A: -?[0-9]{1,6}",
    "date": r"[0-9]{4}-[0-9]{2}-[0-9]{2}",
    "words": r"(yes|no|maybe)( (yes|no|maybe)){0,3}",
}
