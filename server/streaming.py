"""Server-sent events for streamed completions, ending with `data: [DONE]`.

A stream is primed before the response starts: its first event (the first
token) is produced while errors can still become a proper HTTP status. After
that, an error is sent as one `{"error": ...}` event before `[DONE]`, as
OpenAI and vLLM do.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable

from server.errors import CLIENT_CLOSED

log = logging.getLogger(__name__)

DONE = "data: [DONE]\n\n"


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


class Stream:
    def __init__(self, first: str | None, rest: AsyncIterator[str]) -> None:
        self._first = first
        self._rest = rest

    @classmethod
    async def open(cls, events: AsyncIterator[str]) -> Stream:
        try:
            first = await anext(events)
        except StopAsyncIteration:
            first = None
        return cls(first, events)

    async def events(self, translate: Callable[[Exception], object], on_done: Callable[[str], None]):
        """Yield the SSE text; `on_done(status)` runs exactly once at the end."""
        status = "200"
        try:
            if self._first is not None:
                yield self._first
            async for event in self._rest:
                yield event
            yield DONE
        except (asyncio.CancelledError, GeneratorExit):
            status = CLIENT_CLOSED
            raise
        except Exception as exc:
            error = translate(exc)
            status = str(error.status)
            yield sse(error.body())
            yield DONE
        finally:
            await _close(self._rest)
            on_done(status)


async def _close(events: AsyncIterator[str]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            log.debug("closing a finished stream failed", exc_info=True)
