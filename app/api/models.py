"""``GET /v1/models``: the backbone (and, later, every domain) with its context window."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.cleanjson import CleanJSONRoute
from app.api.deps import CatalogDep
from app.protocol.openai import ModelCard, ModelList

router = APIRouter(route_class=CleanJSONRoute, tags=["models"])


@router.get("/models", response_model=ModelList)
async def list_models(catalog: CatalogDep) -> ModelList:
    return catalog.listing()


@router.get("/models/{model_id:path}", response_model=ModelCard)
async def get_model(model_id: str, catalog: CatalogDep) -> ModelCard:
    target = catalog.resolve(model_id)
    return next(card for card in catalog.listing().data if card.id == target.model)
