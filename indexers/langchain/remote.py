"""A running Tailor from LangChain: its search route as a retriever, and documents pushed into a domain.

Talks plain HTTP (``httpx``) to the REST routes, so it works against any Tailor a client can
reach, with the same API keys and limits as other clients. Search errors (unknown domain, bad
filter) raise ``httpx.HTTPStatusError`` carrying Tailor's message.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import httpx
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

_SCALARS = (str, int, float, bool, type(None))
BATCH = 500  # documents per request when pushing


def _raise_for(resp: httpx.Response) -> None:
    if resp.is_error:
        try:
            message = resp.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = resp.text
        raise httpx.HTTPStatusError(f"{resp.status_code}: {message}", request=resp.request, response=resp)


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class TailorRetriever(BaseRetriever):
    """Passages from a domain of a running Tailor, as ``Document``s with their source.

    Each document's ``metadata`` holds the passage's own metadata plus ``document_id``,
    ``chunk_id``, ``filename``, ``title``, ``location`` (page / section / sheet / row), ``score``
    and ``language``; ``id`` is the document id. ``k``, ``mode``, ``filter`` and ``min_score`` can
    also be given per call: ``retriever.invoke("query", k=3)``.
    """

    base_url: str = "http://127.0.0.1:8000"
    domain: str
    k: int = 4
    mode: Literal["dense", "bm25", "hybrid"] = "hybrid"
    filter: dict[str, Any] | None = None
    min_score: float | None = None
    api_key: str | None = None
    timeout: float = 60.0

    def _body(self, query: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        body = {
            "query": query,
            "top_k": kwargs.get("k", self.k),
            "mode": kwargs.get("mode", self.mode),
            "filter": kwargs.get("filter", self.filter),
            "min_score": kwargs.get("min_score", self.min_score),
        }
        return {k: v for k, v in body.items() if v is not None}

    @property
    def _url(self) -> str:
        return f"{self.base_url.rstrip('/')}/v1/domains/{self.domain}/search"

    @staticmethod
    def _documents(resp: httpx.Response) -> list[Document]:
        _raise_for(resp)
        return [
            Document(
                id=h["document_id"],
                page_content=h["text"],
                metadata={
                    **h.get("metadata", {}),
                    "document_id": h["document_id"],
                    "chunk_id": h["chunk_id"],
                    "filename": h.get("filename"),
                    "title": h.get("title"),
                    "location": h.get("location", {}),
                    "score": h["score"],
                    "language": h.get("language"),
                },
            )
            for h in resp.json()["data"]
        ]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        resp = httpx.post(
            self._url, json=self._body(query, kwargs), headers=_headers(self.api_key), timeout=self.timeout
        )
        return self._documents(resp)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            resp = await client.post(
                self._url, json=self._body(query, kwargs), headers=_headers(self.api_key)
            )
        return self._documents(resp)


def _scalar_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Tailor stores scalar metadata (filterable); nested loader metadata goes in as JSON text."""
    return {str(k): v if isinstance(v, _SCALARS) else json.dumps(v, default=str) for k, v in metadata.items()}


def push_documents(
    documents: Sequence[Document],
    domain: str,
    base_url: str = "http://127.0.0.1:8000",
    *,
    api_key: str | None = None,
    timeout: float = 600.0,
) -> list[dict[str, Any]]:
    """Ingest LangChain ``Document``s (e.g. a document loader's output) into a domain; waits for each batch.

    A document's ``id`` (when set) becomes its Tailor id, so pushing again updates it. Returns
    Tailor's per-document results (``created`` / ``updated`` / ``unchanged`` / ``duplicate`` / ``error``).
    """
    url = f"{base_url.rstrip('/')}/v1/domains/{domain}/documents"
    results: list[dict[str, Any]] = []
    with httpx.Client(timeout=timeout, headers=_headers(api_key)) as client:
        for start in range(0, len(documents), BATCH):
            batch = [
                {
                    **({"id": d.id} if d.id else {}),
                    "text": d.page_content,
                    "metadata": _scalar_metadata(d.metadata),
                }
                for d in documents[start : start + BATCH]
            ]
            resp = client.post(url, json={"documents": batch}, params={"wait": "true"})
            _raise_for(resp)
            results += resp.json()["results"]
    return results
