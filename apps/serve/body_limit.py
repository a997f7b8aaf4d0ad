"""An ASGI middleware that refuses bodies over `max_bytes` with a 413 OpenAI-style error.

A body with Content-Length is judged by the header before a byte is read. A chunked body (no
Content-Length) is read here first, at most `max_bytes + 1` bytes, and refused as soon as it
passes the limit; a body within it is handed on to the app unchanged. Either way an oversized
body is never buffered whole, and the app never sees one (so its body parser cannot turn the
refusal into a 400).
"""

from __future__ import annotations

from ponder.apps.serve.errors import APIError


class BodyLimit:
    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> APIError:
        return APIError(
            413, f"the request body exceeds this server's limit of {self.max_bytes} bytes",
            param="max_body_bytes", code="body_too_large",
        )  # fmt: skip

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_bytes:
                return await self._error().response()(scope, receive, send)
            return await self.app(scope, receive, send)
        messages = await self._read_chunked(receive)
        if messages is None:
            return await self._error().response()(scope, receive, send)

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _read_chunked(self, receive) -> list[dict] | None:
        """The body's messages, or None once they pass `max_bytes` (or the client left)."""
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages  # a disconnect: let the app see it
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                return None
            if not message.get("more_body", False):
                return messages
