"""Errors of the adapter layer; the API layer turns them into OpenAI-shaped responses."""

from __future__ import annotations


class AdapterError(Exception):
    """A refused adapter or name: ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
