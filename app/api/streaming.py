"""Response helpers shared by the generation routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from app.protocol.errors import APIError
from app.serving.sse import with_error_event

T = TypeVar("T")

#: With ``stream: true`` the 200 answer is server-sent events (``data: {...}`` lines, then ``[DONE]``).
STREAM_RESPONSE: dict[int | str, dict] = {
    200: {
        "content": {
            "text/event-stream": {
                # one server-sent event: ``data`` holds a JSON chunk (or ``[DONE]``)
                "schema": {
                    "type": "object",
                    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
                    "required": ["data"],
                }
            }
        },
        "description": "The completion",
    }
}


R = TypeVar("R", bound=Response)

#: The gate's choice on routed requests (``model: "auto"``, routing domains), streamed ones too.
GATE_HEADER = "x-tailor-gate"


def mark_gate(response: R, header: str | None) -> R:
    """Add the gate's choice to a response (streamed or not) when the request was routed."""
    if header:
        response.headers[GATE_HEADER] = header
    return response


async def sse_response(
    request: Request, events: AsyncIterator[str], release: Callable[[], None] = lambda: None
) -> StreamingResponse:
    """Stream ``events`` as SSE once the first one exists; ``release`` runs when the stream ends.

    Waiting for the first event means an error before any output (engine unavailable,
    overloaded, a rejected request) answers with its own status code and an OpenAI error body;
    only errors after output has started become an error event followed by ``[DONE]``.
    ``release`` (the request's lease) runs after the last event, on an error, or on a disconnect.
    """
    try:
        first: str | None = await run_until_disconnect(request, anext(events))
    except StopAsyncIteration:
        first = None
    except BaseException:
        try:
            await events.aclose()
        finally:
            release()
        raise

    async def replay() -> AsyncIterator[str]:
        try:
            if first is not None:
                yield first
            async for chunk in events:
                yield chunk
        finally:
            release()

    # Starlette cancels the generator when the client disconnects, which aborts the engine work.
    return StreamingResponse(
        with_error_event(replay()),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def run_until_disconnect(request: Request, work: Awaitable[T]) -> T:
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
