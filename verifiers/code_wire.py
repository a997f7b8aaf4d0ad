"""The wire format between the code harness and a sandboxed candidate: plain values, exact types.

    payload = encode(("ab", 3, [1.5, None]))   # JSON text; raises TypeError for anything else
    decode(payload) == ("ab", 3, [1.5, None])  # raises ValueError for malformed input
    send(fd, {...}); receive(fd, deadline) -> dict | None (None at end of file)

Only None, bool, int, float, complex, str, bytes, list, tuple, dict, set and frozenset cross,
checked with `type(x) is ...` (no subclasses), so an object with a custom __eq__, a lazy
sequence or a str subclass cannot be sent back as an answer. Scalars are native JSON (JSON keeps
int, float and bool apart); containers are tagged one-key objects ({"t": [...]} for a tuple,
{"d": [[k, v], ...]} for a dict, so keys keep their types). Messages are length-prefixed JSON,
at most MAX_MESSAGE bytes. This file is self-contained (stdlib only) because its source is
also sent into the sandboxed candidate process and the harness process, which have no ponder.
"""

import json
import os
import select
import struct
import time

MAX_MESSAGE = 8 << 20
MAX_DEPTH = 64
_SCALARS = (type(None), bool, int, float, str)
_TAGS = {list: "l", tuple: "t", set: "s", frozenset: "f"}
_TYPES = {tag: kind for kind, tag in _TAGS.items()}


def _enc(value, depth):
    kind = type(value)
    if depth > MAX_DEPTH:
        raise TypeError(f"value nested deeper than {MAX_DEPTH}")
    if kind in _SCALARS:
        return value
    if kind in _TAGS:
        return {_TAGS[kind]: [_enc(v, depth + 1) for v in value]}
    if kind is dict:
        return {"d": [[_enc(k, depth + 1), _enc(v, depth + 1)] for k, v in value.items()]}
    if kind is bytes:
        return {"b": value.hex()}
    if kind is complex:
        return {"c": [value.real, value.imag]}
    raise TypeError(f"a {kind.__module__}.{kind.__qualname__} is not plain data")


def _dec(node):
    if type(node) in _SCALARS:
        return node
    if type(node) is not dict or len(node) != 1:
        raise ValueError("malformed value")
    ((tag, body),) = node.items()
    if tag in _TYPES and type(body) is list:
        items = [_dec(v) for v in body]
        return items if tag == "l" else _TYPES[tag](items)
    if tag == "d" and type(body) is list and all(type(p) is list and len(p) == 2 for p in body):
        return {_dec(k): _dec(v) for k, v in body}
    if tag == "b" and type(body) is str:
        return bytes.fromhex(body)
    if tag == "c" and type(body) is list and len(body) == 2:
        return complex(*(float(x) for x in body))
    raise ValueError(f"malformed value tag {tag!r}")


def encode(value):
    return _enc(value, 0)


def decode(node):
    try:
        return _dec(node)
    except (TypeError, RecursionError, OverflowError) as e:  # unhashable keys, too deep
        raise ValueError(f"malformed value: {e}") from None


def send(fd, message):
    data = json.dumps(message).encode()
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data) :]


def _read_exactly(fd, n, deadline):
    chunks, left = [], n
    while left:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not select.select([fd], [], [], wait)[0]:
            raise TimeoutError("no answer before the deadline")
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(fd, deadline=None):
    """The next message (a dict), or None at end of file; ValueError if malformed."""
    head = _read_exactly(fd, 4, deadline)
    if head is None:
        return None
    (size,) = struct.unpack(">I", head)
    if size > MAX_MESSAGE:
        raise ValueError(f"message of {size} bytes exceeds {MAX_MESSAGE}")
    body = _read_exactly(fd, size, deadline)
    if body is None:
        return None
    try:
        message = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"malformed message: {e}") from None
    if type(message) is not dict:
        raise ValueError("malformed message")
    return message
