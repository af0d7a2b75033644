"""The body of ``POST /v1/domains/{domain}/documents``: multipart files and/or JSON documents.

Request parsing belongs to the routes; the knowledge layer receives plain ``indexers.ingest.Source``
values and never sees HTTP.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from app.config import KnowledgeSettings
from app.protocol.cleanjson import loads
from app.protocol.documents import DocumentsIn
from app.protocol.errors import APIError
from indexers.ingest import Source


def _metadata(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = loads(raw)
    except json.JSONDecodeError as exc:
        raise APIError(
            400, f"'metadata' is not valid JSON: {exc.msg}", param="metadata", code="invalid_json"
        ) from exc
    if not isinstance(value, dict) or not all(
        isinstance(v, (str, int, float, bool, type(None))) for v in value.values()
    ):
        raise APIError(
            422, "'metadata' must be a JSON object of scalar values.", param="metadata", code="invalid_value"
        )
    return value


def _json_documents(payload: Any) -> list[Source]:
    try:
        body = DocumentsIn.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise APIError(
            422, f"Invalid documents: {where}: {first['msg']}", param=where, code="invalid_value"
        ) from exc
    return [Source(id=d.id, text=d.text, title=d.title, metadata=dict(d.metadata)) for d in body.documents]


async def read_sources(request: Request, settings: KnowledgeSettings) -> list[Source]:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        try:
            payload = loads(await request.body())
        except json.JSONDecodeError as exc:
            raise APIError(400, "The request body is not valid JSON.", code="invalid_json") from exc
        return _json_documents(payload)
    if not ctype.startswith("multipart/form-data"):
        raise APIError(
            415,
            'Send multipart/form-data files or a JSON {"documents": [...]} body.',
            code="unsupported_media_type",
        )
    async with request.form(max_files=settings.max_files, max_fields=64) as form:
        metadata = _metadata(form.get("metadata") if isinstance(form.get("metadata"), str) else None)
        sources: list[Source] = []
        raw_docs = form.get("documents")
        if isinstance(raw_docs, str):
            try:
                sources += _json_documents(loads(raw_docs))
            except json.JSONDecodeError as exc:
                raise APIError(
                    400, "'documents' is not valid JSON.", param="documents", code="invalid_json"
                ) from exc
        for key, value in form.multi_items():
            if not isinstance(value, UploadFile):
                continue
            if key not in ("file", "files", "files[]"):
                raise APIError(
                    422, f"Unexpected file field '{key}'; use 'files'.", param=key, code="invalid_value"
                )
            data = await value.read(settings.max_file_bytes + 1)
            if len(data) > settings.max_file_bytes:
                raise APIError(
                    413,
                    f"'{value.filename}' exceeds {settings.max_file_bytes} bytes.",
                    param="files",
                    code="file_too_large",
                )
            sources.append(
                Source(
                    filename=value.filename or "upload",
                    data=data,
                    content_type=value.content_type,
                    metadata=dict(metadata),
                )
            )
    if not sources:
        raise APIError(422, "No files or documents in the request.", param="files", code="invalid_value")
    return sources
