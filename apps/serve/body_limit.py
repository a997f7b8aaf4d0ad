"""An ASGI middleware that refuses bodies over `max_bytes` with a 413 OpenAI-style error.

It checks Content-Length up front and counts the bytes of chunked bodies as they arrive, so an
oversized body is refused without being buffered whole.
"""

from __future__ import annotations

from ponder.apps.serve.errors import APIError


class _TooLarge(Exception):
    pass


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
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            return await self._error().response()(scope, receive, send)
        seen = 0
        started = False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._error().response()(scope, receive, send)
