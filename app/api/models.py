"""``GET /v1/models``: backbone, domains, adapters, soft prompts; ``DELETE`` removes a fine-tuned one."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.adapters import AdaptersDep, ForceQuery
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
    cards = catalog.listing().data
    if catalog.owner(model_id) == "gate":  # listed while there are domains to choose among
        gate = next((card for card in cards if card.id == model_id), None)
        if gate is not None:
            return gate
    target = catalog.resolve(model_id)  # 404 for unknown names
    return next(card for card in cards if card.id == target.model)


class ModelDeleted(BaseModel):
    id: str
    object: str = "model"
    deleted: bool = True
    detached_from: list[str] = Field(
        default_factory=list, description="Domains whose profile named it and no longer does (force=true)."
    )


@router.delete("/models/{model_id}", dependencies=[AdminDep], response_model=ModelDeleted)
async def delete_model(
    model_id: str, catalog: CatalogDep, adapters: AdaptersDep, soft: SoftPromptsDep, force: ForceQuery = False
) -> ModelDeleted:
    """OpenAI's "delete a fine-tuned model": unloads an adapter or deletes a soft prompt (refused
    while a domain profile names it, unless ``force``)."""
    owner = catalog.owner(model_id)
    if owner == "soft_prompt":
        _, detached = await soft.delete(model_id, force=force)
        return ModelDeleted(id=model_id, detached_from=detached)
    if owner != "adapter":
        target = catalog.resolve(model_id)  # 404 for unknown names
        raise APIError(
            400,
            f"'{target.model}' is not a fine-tuned model or adapter; delete domains with DELETE /v1/domains/{{name}}.",
            param="model",
            code="invalid_value",
        )
    _, detached = await adapters.unload(model_id, force=force)
    return ModelDeleted(id=model_id, detached_from=detached)
