"""API keys (several allowed) and the admin key; body size limit.

Keys are compared in constant time against every configured key, so neither
the match nor its position leaks through timing.
"""

from __future__ import annotations

import hmac

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import Forbidden, PayloadTooLarge, Unauthorized, error_response


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def matches_any(token: str, keys: list[str]) -> bool:
    found = False
    for key in keys:
        found |= hmac.compare_digest(token.encode(), key.encode())
    return found


def check_api_key(request: Request) -> str | None:
    """The caller's API key (None when the server runs without keys)."""
    keys = request.app.state.api_keys
    if not keys:
        return None
    token = bearer(request)
    if token is None:
        raise Unauthorized("missing API key; send it as 'Authorization: Bearer <key>'")
    if not matches_any(token, keys):
        raise Unauthorized("the API key is not valid; check it or ask the server's operator for one")
    return token


def check_admin_key(request: Request) -> None:
    admin = request.app.state.admin_key
    if admin is None:
        raise Forbidden("runtime corrections are disabled; start the server with --admin-key to enable them")
    token = bearer(request)
    if token is None or not matches_any(token, [admin]):
        raise Unauthorized("this endpoint needs the admin key as 'Authorization: Bearer <admin key>'", code="invalid_admin_key")


DRAIN_LIMIT = 64 * 1024 * 1024


class BodySizeLimit:
    """Refuse request bodies over `limit` bytes with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int, on_reject) -> None:
        self.app = app
        self.limit = limit
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._reject(scope, receive, send)
        # Read the body here (it is bounded) so an oversized chunked body is
        # refused with 413 before any handler sees it, then replay it.
        body, more = [], True
        size = 0
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away while sending
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await self._reject(scope, receive, send, more)
            body.append(chunk)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, more: bool = True) -> None:
        # Most clients send the whole body before they read the answer: discard
        # the rest (up to a bound) so they see the 413 instead of a stalled upload.
        drained = 0
        while more and drained < DRAIN_LIMIT:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            more = message.get("more_body", False)
        error = PayloadTooLarge(f"the request body exceeds {self.limit} bytes; send a smaller request", code="body_too_large")
        self.on_reject(scope.get("path", ""), error)
        await error_response(error)(scope, None, send)
