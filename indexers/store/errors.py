"""Faults of a knowledge store that are the server's, not the request's."""

from __future__ import annotations


class StoreUnavailable(RuntimeError):
    """The store's server did not answer (down, unreachable, timed out). The message names where it
    was looked for, so an operator reading a 503 knows which server to check."""

    def __init__(self, uri: str, detail: str) -> None:
        super().__init__(f"the knowledge store at {uri} is unavailable: {detail}")
        self.uri = uri
        self.detail = detail
