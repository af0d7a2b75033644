"""LoRA adapters: load (path or upload), list, get, unload; plus vLLM's runtime-LoRA routes."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import ValidationError

from app.adapters.registry import AdapterEntry
from app.adapters.service import AdapterService
from app.api.cleanjson import CleanJSONRoute, loads
from app.api.deps import AdminDep, CatalogDep, StateDep
from app.api.uploads import NAMED_FILES_BODY, read_named_files
from app.protocol.adapters import (
    AdapterDeleted,
    AdapterList,
    AdapterLoad,
    AdapterPublic,
    LoadLoRAAdapterRequest,
    UnloadLoRAAdapterRequest,
)
from app.protocol.errors import APIError

router = APIRouter(route_class=CleanJSONRoute, tags=["adapters"])

#: ``?force=true`` on a delete: detach the member from the domain profiles that name it.
ForceQuery = Annotated[bool, Query(description="Detach it from the domain profiles that name it.")]


def get_adapters(state: StateDep) -> AdapterService:
    if state.adapters is None:
        raise APIError(503, "The adapter registry is not ready.", code="adapters_unavailable")
    return state.adapters


AdaptersDep = Annotated[AdapterService, Depends(get_adapters)]


def public(entry: AdapterEntry, parent: str) -> AdapterPublic:
    return AdapterPublic(
        id=entry.name,
        path=entry.path,
        source=entry.source,
        method=entry.method,
        served_by=entry.served_by,
        rank=entry.rank,
        alpha=entry.alpha,
        target_modules=entry.target_modules,
        size_bytes=entry.size_bytes,
        base_model=entry.base_model,
        domain=entry.domain,
        parent=parent,
        conversion=entry.conversion,
        created_at=entry.created_at,
    )


@router.post(
    "/adapters",
    dependencies=[AdminDep],
    response_model=AdapterPublic,
    status_code=201,
    openapi_extra={
        "requestBody": {
            "content": {"application/json": {"schema": AdapterLoad.model_json_schema()}, **NAMED_FILES_BODY}
        }
    },
)
async def load_adapter(request: Request, adapters: AdaptersDep, catalog: CatalogDep) -> JSONResponse:
    """Load a PEFT LoRA: JSON ``{name, path}`` inside the adapters dir, or a multipart upload."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        name, files = await read_named_files(request, adapters.max_bytes, "adapter_too_large")
        entry = await adapters.upload(name, files)
    elif ctype.startswith("application/json"):
        try:
            body = AdapterLoad.model_validate(loads(await request.body()))
        except json.JSONDecodeError as exc:
            raise APIError(400, "The request body is not valid JSON.", code="invalid_json") from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or None
            raise APIError(
                422, f"Invalid request: {where}: {first['msg']}", param=where, code="invalid_value"
            ) from exc
        entry = await adapters.load_path(body.name, body.path)
    else:
        raise APIError(
            415,
            'Send JSON {"name", "path"} or multipart/form-data with name and files.',
            code="unsupported_media_type",
        )
    return JSONResponse(public(entry, catalog.base_name).model_dump(mode="json"), status_code=201)


@router.get("/adapters", response_model=AdapterList)
async def list_adapters(adapters: AdaptersDep, catalog: CatalogDep) -> AdapterList:
    registry = adapters.registry
    return AdapterList(
        data=[public(e, catalog.base_name) for e in registry.entries()],
        warnings=list(registry.warnings.values()),
    )


@router.get("/adapters/{name}", response_model=AdapterPublic)
async def get_adapter(name: str, adapters: AdaptersDep, catalog: CatalogDep) -> AdapterPublic:
    entry = adapters.registry.get(name)
    if entry is None:
        raise APIError(404, f"No adapter named '{name}'.", param="name", code="adapter_not_found")
    return public(entry, catalog.base_name)


@router.delete("/adapters/{name}", dependencies=[AdminDep], response_model=AdapterDeleted)
async def unload_adapter(name: str, adapters: AdaptersDep, force: ForceQuery = False) -> AdapterDeleted:
    """Unload: refused (409) while a domain profile names it unless ``force`` detaches it; new
    requests get 404 at once; running ones finish first (409 ``adapter_in_use`` if they outlast
    ``TAILOR_DRAIN_TIMEOUT_S``, and the adapter stays)."""
    entry, detached = await adapters.unload(name, force=force)
    return AdapterDeleted(id=entry.name, detached_from=detached)


#: vLLM answers its runtime-LoRA routes with a line of text; errors stay OpenAI-shaped JSON.
_TEXT = {200: {"description": "Success", "content": {"text/plain": {"schema": {"type": "string"}}}}}


@router.post("/load_lora_adapter", dependencies=[AdminDep], responses=_TEXT, response_class=Response)
async def vllm_load(body: LoadLoRAAdapterRequest, adapters: AdaptersDep, _: CatalogDep) -> Response:
    """vLLM's runtime-LoRA route: the same checks as ``POST /v1/adapters``."""
    await adapters.load_path(body.lora_name, body.lora_path)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")


@router.post("/unload_lora_adapter", dependencies=[AdminDep], responses=_TEXT, response_class=Response)
async def vllm_unload(body: UnloadLoRAAdapterRequest, adapters: AdaptersDep) -> Response:
    await adapters.unload(body.lora_name)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")
