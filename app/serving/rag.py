"""Retrieval for generation requests addressed to a domain: fetch passages, keep what fits.

The passages actually given to the model (after fitting the window) are returned as ``sources``.
"""

from __future__ import annotations

from dataclasses import asdict

from app.config import Settings
from app.knowledge.base import KnowledgeBase
from app.protocol.documents import Source
from indexers.store import SearchHit
from prompts.rag import Passage


def label(hit: SearchHit) -> str:
    where = hit.location
    parts = [hit.filename or hit.title or hit.document_id]
    if "page" in where:
        parts.append(f"page {where['page']}")
    if "sheet" in where:
        parts.append(f"sheet {where['sheet']}")
    if "row" in where:
        parts.append(f"row {where['row']}")
    if "section" in where:
        parts.append(str(where["section"]))
    return ", ".join(parts)


async def retrieve(kb: KnowledgeBase, domain: str, query: str, settings: Settings) -> list[SearchHit]:
    if not query.strip():
        return []
    k = settings.knowledge
    return await kb.search(domain, query[:4000], top_k=k.rag_top_k, mode=k.rag_mode)


def passages(hits: list[SearchHit]) -> list[Passage]:
    return [Passage(h.text, label(h)) for h in hits]


def sources(hits: list[SearchHit]) -> list[Source]:
    return [Source(index=i, **asdict(h)) for i, h in enumerate(hits, start=1)]
