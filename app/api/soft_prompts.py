"""Soft prompts: list, get, delete, and import a PEFT prompt-learning adapter (multipart)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from app.api.adapters import ForceQuery
from app.api.cleanjson import CleanJSONRoute
from app.api.deps import AdminDep, CatalogDep, StateDep
from app.api.uploads import NAMED_FILES_BODY, read_named_files
from app.protocol.errors import APIError
from app.protocol.soft_prompts import SoftPromptDeleted, SoftPromptList, SoftPromptPublic
from app.soft_prompt_registry.service import SoftPromptEntry, SoftPromptService

router = APIRouter(route_class=CleanJSONRoute, tags=["soft prompts"])


def get_soft_prompts(state: StateDep) -> SoftPromptService:
    if state.soft_prompts is None:
        raise APIError(503, "The soft-prompt registry is not ready.", code="soft_prompts_unavailable")
    return state.soft_prompts


SoftPromptsDep = Annotated[SoftPromptService, Depends(get_soft_prompts)]


def public(entry: SoftPromptEntry, parent: str) -> SoftPromptPublic:
    config = entry.prompt.config.to_dict()
    config.pop("method", None)
    return SoftPromptPublic(
        id=entry.name,
        method=entry.method,
        num_virtual_tokens=entry.prompt.num_virtual_tokens,
        served_by="vllm" if entry.ref.kind == "embeddings" else "transformers",
        config=config,
        source="fine-tune" if entry.source == "fine-tune" else "import",
        domain=entry.domain,
        fine_tuning_job=entry.prompt.meta.get("fine_tuning_job"),
        base_model=entry.prompt.fingerprint.model_id,
        parent=parent,
        size_bytes=entry.size_bytes,
        created_at=entry.created_at,
    )


async def _read_upload(request: Request, max_bytes: int) -> tuple[str, dict[str, bytes]]:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise APIError(
            415,
            "Send multipart/form-data with a 'name' field and the adapter's files.",
            code="unsupported_media_type",
        )
    return await read_named_files(request, max_bytes, "soft_prompt_too_large")


@router.post(
    "/soft-prompts/import",
    dependencies=[AdminDep],
    response_model=SoftPromptPublic,
    status_code=201,
    openapi_extra={"requestBody": {"content": NAMED_FILES_BODY}},
)
async def import_soft_prompt(request: Request, soft: SoftPromptsDep, catalog: CatalogDep) -> SoftPromptPublic:
    """Import a PEFT prompt-tuning, P-tuning or prefix-tuning adapter for the served backbone."""
    name, files = await _read_upload(request, soft.max_bytes)
    entry = await soft.import_files(name, files)
    return public(entry, catalog.base_name)


@router.get("/soft-prompts", response_model=SoftPromptList)
async def list_soft_prompts(soft: SoftPromptsDep, catalog: CatalogDep) -> SoftPromptList:
    return SoftPromptList(
        data=[public(e, catalog.base_name) for e in soft.entries()], warnings=list(soft.warnings.values())
    )


@router.get("/soft-prompts/{name}", response_model=SoftPromptPublic)
async def get_soft_prompt(name: str, soft: SoftPromptsDep, catalog: CatalogDep) -> SoftPromptPublic:
    entry = soft.get(name)
    if entry is None:
        raise APIError(404, f"No soft prompt named '{name}'.", param="name", code="soft_prompt_not_found")
    return public(entry, catalog.base_name)


@router.delete("/soft-prompts/{name}", dependencies=[AdminDep], response_model=SoftPromptDeleted)
async def delete_soft_prompt(
    name: str, soft: SoftPromptsDep, catalog: CatalogDep, force: ForceQuery = False
) -> SoftPromptDeleted:
    """Delete: refused (409) while a domain profile names it unless ``force`` detaches it; new
    requests get 404 at once; running ones finish first."""
    entry, detached = await soft.delete(name, force=force)
    return SoftPromptDeleted(id=entry.name, detached_from=detached)
