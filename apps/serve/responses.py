"""OpenAI response bodies and stream chunks from an Outcome; pure functions, no I/O.

Completions get `choices[i].text` and the legacy logprobs shape; chat gets
`choices[i].message` and the `logprobs.content` shape. A search's details ride in a `ponder`
field that standard clients ignore; `usage` counts every token the search spent.
"""

from __future__ import annotations

import time

from ponder.apps.serve.runner import Choice, Outcome


def _token(engine, token_id: int, entry: dict) -> tuple[str, float]:
    lp = entry.get(token_id)
    text = (
        lp.decoded_token
        if lp is not None and lp.decoded_token is not None
        else engine.decode([token_id])
    )
    return text, (lp.logprob if lp is not None else 0.0)


def completion_logprobs(engine, choice: Choice) -> dict | None:
    if choice.logprobs is None:
        return None
    tokens, values, tops, offsets, offset = [], [], [], [], 0
    for token_id, entry in zip(choice.token_ids, choice.logprobs, strict=False):
        text, value = _token(engine, token_id, entry)
        tokens.append(text)
        values.append(value)
        tops.append({(lp.decoded_token or ""): lp.logprob for lp in entry.values()})
        offsets.append(offset)
        offset += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": values,
        "top_logprobs": tops,
        "text_offset": offsets,
    }


def chat_logprobs(engine, choice: Choice, top: int) -> dict | None:
    if choice.logprobs is None:
        return None
    content = []
    for token_id, entry in zip(choice.token_ids, choice.logprobs, strict=False):
        text, value = _token(engine, token_id, entry)
        ranked = sorted(entry.values(), key=lambda lp: -lp.logprob)[:top]
        alternatives = [
            {"token": lp.decoded_token or "", "logprob": lp.logprob,
             "bytes": list((lp.decoded_token or "").encode())}
            for lp in ranked
        ]  # fmt: skip
        content.append(
            {
                "token": text,
                "logprob": value,
                "bytes": list(text.encode()),
                "top_logprobs": alternatives,
            }
        )
    return {"content": content}


def _envelope(kind: str, request_id: str, model: str) -> dict:
    return {"id": request_id, "object": kind, "created": int(time.time()), "model": model}


def completion_body(
    engine, outcome: Outcome, request_id: str, model: str, token_ids: bool = False
) -> dict:
    """`stop_reason` (always) and `token_ids` (when asked) are vLLM's extensions: with them a
    client that drives searches over HTTP (engine/remote_backend.py) gets exact token ids and
    tells a stop string (which the text omits) from EOS."""
    body = _envelope("text_completion", request_id, model)
    body["choices"] = [
        {"index": c.index, "text": c.text, "finish_reason": c.finish_reason,
         "stop_reason": c.stop_reason, "logprobs": completion_logprobs(engine, c)}
        | ({"token_ids": list(c.token_ids) or None} if token_ids else {})
        for c in outcome.choices
    ]  # fmt: skip
    body["usage"] = outcome.usage
    if outcome.details is not None:
        body["ponder"] = outcome.details
    return body


def chat_body(engine, outcome: Outcome, request_id: str, model: str, top: int) -> dict:
    body = _envelope("chat.completion", request_id, model)
    body["choices"] = [
        {"index": c.index, "message": {"role": "assistant", "content": c.text},
         "finish_reason": c.finish_reason, "logprobs": chat_logprobs(engine, c, top)}
        for c in outcome.choices
    ]  # fmt: skip
    body["usage"] = outcome.usage
    if outcome.details is not None:
        body["ponder"] = outcome.details
    return body


def completion_chunk(request_id: str, model: str, choice: Choice, engine) -> dict:
    body = _envelope("text_completion", request_id, model)
    body["choices"] = [
        {"index": choice.index, "text": choice.text, "finish_reason": choice.finish_reason,
         "logprobs": completion_logprobs(engine, choice)}
    ]  # fmt: skip
    return body


def chat_chunks(
    request_id: str, model: str, choice: Choice, engine, top: int, first: bool
) -> list[dict]:
    """The chunks of one delta of one choice: the role (on the choice's `first` delta), the new
    content (when there is any), and the finish reason (on its last delta)."""
    deltas = []
    if first:
        deltas.append(({"role": "assistant", "content": ""}, None, None))
    if choice.text or choice.logprobs:
        deltas.append(({"content": choice.text}, None, chat_logprobs(engine, choice, top)))
    if choice.finish_reason is not None:
        deltas.append(({}, choice.finish_reason, None))
    chunks = []
    for delta, reason, logprobs in deltas:
        body = _envelope("chat.completion.chunk", request_id, model)
        body["choices"] = [
            {"index": choice.index, "delta": delta, "finish_reason": reason, "logprobs": logprobs}
        ]
        chunks.append(body)
    return chunks


def usage_chunk(kind: str, request_id: str, model: str, outcome: Outcome) -> dict:
    body = _envelope(kind, request_id, model)
    body["choices"] = []
    body["usage"] = outcome.usage
    if outcome.details is not None:
        body["ponder"] = outcome.details
    return body
