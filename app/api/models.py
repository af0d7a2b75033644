"""``GET /v1/models``: backbone, domains, adapters, soft prompts; ``DELETE`` removes a fine-tuned one."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from pydantic import BaseModel

from app.api.adapters import AdaptersDep
from app.api.cleanjson import CleanJSONRoute
from app.api.deps import AdminDep, CatalogDep
from app.api.soft_prompts import SoftPromptsDep
from app.protocol.errors import APIError
from app.protocol.openai import ModelCard, ModelList

router = APIRouter(route_class=CleanJSONRoute, tags=["models"])


@router.get("/models", response_model=ModelList)
async def list_models(catalog: CatalogDep) -> ModelList:
    return catalog.listing()


@router.get("/models/{model_id:path}", response_model=ModelCard)
async def get_model(model_id: str, catalog: CatalogDep) -> ModelCard:
    target = catalog.resolve(model_id)
    return next(card for card in catalog.listing().data if card.id == target.model)


class ModelDeleted(BaseModel):
    id: str
    object: str = "model"
    deleted: bool = True


@router.delete("/models/{model_id}", dependencies=[AdminDep], response_model=ModelDeleted)
async def delete_model(
    model_id: str, catalog: CatalogDep, adapters: AdaptersDep, soft: SoftPromptsDep
) -> ModelDeleted:
    """OpenAI's "delete a fine-tuned model": unloads an adapter or deletes a soft prompt."""
    if soft.get(model_id) is not None:
        await asyncio.to_thread(soft.delete, model_id)
        return ModelDeleted(id=model_id)
    if adapters.registry.get(model_id) is None:
        target = catalog.resolve(model_id)  # 404 for unknown names
        raise APIError(
            400,
            f"'{target.model}' is not a fine-tuned model or adapter; delete domains with DELETE /v1/domains/{{name}}.",
            param="model",
            code="invalid_value",
        )
    await adapters.unload(model_id)
    return ModelDeleted(id=model_id)
