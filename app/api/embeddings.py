"""``POST /v1/embeddings`` (OpenAI-compatible): vectors from the knowledge store's embedder.

``model`` is the embedder's name (listed in ``/v1/models`` with ``kind: embedding``) or a domain,
whose collection uses the same embedder.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from app.api.cleanjson import CleanJSONRoute
from app.api.deps import KnowledgeDep, NamesDep
from app.protocol.embeddings import EmbeddingRequest, EmbeddingResponse
from app.protocol.errors import APIError
from app.serving.embeddings import embed

router = APIRouter(route_class=CleanJSONRoute, tags=["embeddings"])


@router.post("/embeddings", response_model=EmbeddingResponse)
async def create_embeddings(
    body: EmbeddingRequest, knowledge: KnowledgeDep, domains: NamesDep
) -> EmbeddingResponse:
    name = knowledge.embedder_name
    if body.model != name and domains.profile(body.model) is None:
        raise APIError(
            404,
            f"The embedding model '{body.model}' does not exist. Use '{name}' (or a domain's name: "
            "domains embed with it too).",
            param="model",
            code="model_not_found",
        )
    embedder = await asyncio.to_thread(lambda: knowledge.embedder)
    return await asyncio.to_thread(embed, body, embedder, body.model)
