"""Errors of the adapter layer; the API layer turns them into OpenAI-shaped responses."""

from __future__ import annotations

from app.errors import ServiceError


class AdapterError(ServiceError):
    """A refused adapter or name: ``status`` is the HTTP status the API answers with."""
