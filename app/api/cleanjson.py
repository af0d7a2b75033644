"""Every route parses JSON through ``app.protocol.cleanjson`` (lone surrogates made safe)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from app.protocol.cleanjson import clean, clean_text, loads

__all__ = ["CleanJSONRoute", "clean", "clean_text", "loads"]


class CleanJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class CleanJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def clean_handler(request: Request) -> Response:
            return await handler(CleanJSONRequest(request.scope, request.receive))

        return clean_handler
