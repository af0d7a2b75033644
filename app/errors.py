"""The one error type lower layers raise: it knows its HTTP status but nothing of HTTP.

Knowledge, domains, adapters, soft prompts, the catalog and fine-tuning raise subclasses of
``ServiceError``; one handler in ``app.api.errors`` renders them all as OpenAI error bodies, so no
layer below the routes imports FastAPI.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A refused operation: ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
