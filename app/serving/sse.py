"""Server-sent events in the OpenAI wire format (``data: {...}`` lines, then ``data: [DONE]``)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from pydantic import BaseModel

from app.protocol.errors import APIError

log = logging.getLogger(__name__)

DONE = "data: [DONE]\n\n"


def event(payload: BaseModel | dict) -> str:
    if isinstance(payload, BaseModel):
        data = payload.model_dump_json(exclude_none=False)
    else:
        data = json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


async def with_error_event(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """Once headers are sent a status code cannot change: report errors as a final event."""
    try:
        async for chunk in events:
            yield chunk
    except APIError as exc:
        yield event(exc.body())
    except Exception:  # noqa: BLE001 - a stream must always end cleanly for the client
        log.exception("stream failed")
        yield event(APIError(500, "internal error while streaming").body())
    yield DONE
