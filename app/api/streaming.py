"""Response helpers shared by the generation routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse

from app.protocol.errors import APIError
from app.serving.sse import with_error_event

T = TypeVar("T")


def sse_response(events: AsyncIterator[str]) -> StreamingResponse:
    # Starlette cancels the generator when the client disconnects, which aborts the engine work.
    return StreamingResponse(
        with_error_event(events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def run_until_disconnect(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Await ``work`` but cancel it (freeing the engine) if the client goes away first."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while not task.done():
            message = await request.receive()
            if message["type"] == "http.disconnect":
                task.cancel()
                return

    watcher = asyncio.ensure_future(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if watcher.done():
            raise APIError(499, "Client closed the request.") from None
        raise
    finally:
        watcher.cancel()
