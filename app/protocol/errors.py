"""OpenAI-shaped errors: every 4xx/5xx body is ``{"error": {message, type, param, code}}``.

Routes raise ``APIError`` (lower layers raise ``app.errors.ServiceError`` subclasses); the central handlers in ``app.api.errors`` render it, so
official OpenAI clients raise their usual typed exceptions (NotFoundError, BadRequestError, ...).
"""

from __future__ import annotations

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable_error",
    507: "server_error",
}


class APIError(Exception):
    """An error with an HTTP status that reaches the client as an OpenAI error body."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict:
        detail = ErrorDetail(
            message=self.message,
            type=_TYPES.get(self.status, "invalid_request_error" if self.status < 500 else "server_error"),
            param=self.param,
            code=self.code,
        )
        return ErrorResponse(error=detail).model_dump()


_DESCRIPTIONS = {
    400: "Invalid request (context length, unsupported parameter, bad filter...)",
    401: "Missing or invalid API key",
    403: "The route needs an admin key",
    404: "Unknown model, domain, document or job",
    409: "Name already taken",
    413: "Body, file or upload too large",
    415: "Unsupported media type",
    422: "Request does not match the schema",
    429: "The engine is overloaded; retry later",
    500: "Internal error",
    503: "The engine is starting, restarting or failed",
    507: "The data dir is out of space (what was stored before stays)",
}


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI ``responses`` entries for OpenAI-shaped errors, so clients and fuzzers know them."""
    return {s: {"model": ErrorResponse, "description": _DESCRIPTIONS[s]} for s in statuses or _DESCRIPTIONS}
