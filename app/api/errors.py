"""Central exception handlers: every error leaves as an OpenAI-shaped body."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import ServiceError
from app.protocol.errors import APIError
from indexers.durable import is_disk_full
from indexers.store.errors import StoreUnavailable

log = logging.getLogger(__name__)


def _response(err: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


def _param(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or None


async def api_error(_: Request, exc: APIError) -> JSONResponse:
    return _response(exc)


async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
    return _response(APIError(exc.status, exc.message, param=exc.param, code=exc.code))


async def store_unavailable(_: Request, exc: StoreUnavailable) -> JSONResponse:
    """The knowledge store's server is down: 503 naming it (the request itself was fine)."""
    return _response(APIError(503, f"{str(exc)[0].upper()}{str(exc)[1:]}.", code="store_unavailable"))


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return _response(APIError(400, "The request body is not valid JSON.", code="invalid_json"))
    param = _param(tuple(first.get("loc", ())))
    message = "; ".join(
        f"{_param(tuple(e.get('loc', ()))) or 'body'}: {e.get('msg', 'invalid')}" for e in errors[:5]
    )
    return _response(APIError(422, f"Invalid request: {message}", param=param, code="invalid_value"))


async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    messages = {404: "Not found.", 405: "Method not allowed."}
    return _response(
        APIError(exc.status_code, str(exc.detail) if exc.detail else messages.get(exc.status_code, "error"))
    )


async def unhandled(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    if is_disk_full(exc):  # a profile or job write on a full data dir: say so, not "internal"
        return _response(
            APIError(507, "The data dir is out of space; free space and retry.", code="insufficient_storage")
        )
    return _response(APIError(500, "Internal server error.", code="internal_error"))


def install(app: FastAPI) -> None:
    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(StoreUnavailable, store_unavailable)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unhandled)
