"""Retrieval for generation requests addressed to a domain: fetch passages, keep what fits.

The passages actually given to the model (after fitting the window) are returned as ``sources``.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict

from app.knowledge.base import KnowledgeBase, NoReranker, RerankerUnavailable
from app.protocol.documents import Source
from app.protocol.errors import APIError
from app.protocol.profiles import DomainProfile, RetrievalOverride, RetrievalSettings
from indexers.store import SearchHit
from indexers.store.filters import FilterError


async def retrieve(
    kb: KnowledgeBase, profile: DomainProfile | None, override: RetrievalOverride | None, query: str
) -> list[SearchHit]:
    """Passages for ``query`` under the profile's retrieval settings and the request's override."""
    if profile is None or not query.strip():
        return []
    if not await asyncio.to_thread(kb.has, profile.name):  # Milvus: may ask the server
        return []
    r = profile.retrieval_for(override)
    if not r.enabled:
        return []
    return await search(kb, profile.name, query[:4000], r, scope="retrieval")


async def search(
    kb: KnowledgeBase, domain: str, query: str, r: RetrievalSettings, scope: str | None = None
) -> list[SearchHit]:
    """Search ``domain`` under ``r``; bad filters and reranking faults become API errors whose
    ``param`` is the field's name inside ``scope`` (``retrieval.filter`` for chat, ``filter`` for
    the search route)."""

    def param(name: str) -> str:
        return f"{scope}.{name}" if scope else name

    try:
        return await kb.search(
            domain,
            query,
            top_k=r.top_k,
            mode=r.mode,
            flt=r.filter,
            min_score=r.min_score,
            fusion=r.fusion.fusion(),
            rerank=r.rerank,
        )
    except FilterError as exc:
        what = f"{scope} filter" if scope else "filter"
        raise APIError(400, f"Invalid {what}: {exc}", param=param("filter"), code="invalid_filter") from exc
    except NoReranker as exc:
        raise APIError(400, str(exc), param=param("rerank"), code="no_reranker") from exc
    except RerankerUnavailable as exc:
        raise APIError(503, str(exc), param=param("rerank"), code="reranker_unavailable") from exc


def sources(hits: list[SearchHit]) -> list[Source]:
    return [Source(index=i, **asdict(h)) for i, h in enumerate(hits, start=1)]
