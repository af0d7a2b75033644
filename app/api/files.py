"""OpenAI's ``/v1/files`` for training data: upload (validated line by line), list, get, content, delete.

Every route is admin: training files are the domain teams' data.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from app.api.cleanjson import CleanJSONRoute
from app.api.deps import AdminDep, SettingsDep, StateDep
from app.finetune.dataset import DatasetError, validate
from app.finetune.files import FileStore, StoredFile
from app.protocol.errors import APIError
from app.protocol.finetune import FileDeleted, FileList, FileObject

router = APIRouter(route_class=CleanJSONRoute, prefix="/files", tags=["files"], dependencies=[AdminDep])


def get_files(state: StateDep) -> FileStore:
    if state.files is None:
        raise APIError(503, "The file store is not ready.", code="files_unavailable")
    return state.files


FilesDep = Annotated[FileStore, Depends(get_files)]


def public(f: StoredFile) -> FileObject:
    return FileObject(id=f.id, bytes=f.bytes, created_at=f.created_at, filename=f.filename, purpose=f.purpose)


def _not_found(file_id: str) -> APIError:
    return APIError(404, f"No file with id '{file_id}'.", param="file_id", code="file_not_found")


@router.post(
    "",
    response_model=FileObject,
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file", "purpose"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "purpose": {"type": "string", "enum": ["fine-tune"]},
                        },
                    }
                }
            }
        }
    },
)
async def upload_file(request: Request, files: FilesDep, settings: SettingsDep) -> FileObject:
    """A JSONL training file: chat lines ``{"messages": [...]}`` or ``{"prompt", "completion"}``."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise APIError(
            415, "Send multipart/form-data with 'file' and 'purpose'.", code="unsupported_media_type"
        )
    limit = settings.training.max_file_bytes
    async with request.form(max_files=1, max_fields=4) as form:
        purpose, upload = form.get("purpose"), form.get("file")
        if purpose != "fine-tune":
            raise APIError(
                400,
                "Only purpose 'fine-tune' is accepted by this server.",
                param="purpose",
                code="invalid_purpose",
            )
        if not isinstance(upload, UploadFile):
            raise APIError(422, "The request has no 'file'.", param="file", code="invalid_value")
        data = await upload.read(limit + 1)
        filename = (upload.filename or "upload.jsonl").rsplit("/", 1)[-1]
    if len(data) > limit:
        raise APIError(413, f"The file exceeds {limit} bytes.", param="file", code="file_too_large")
    try:
        examples = await asyncio.to_thread(validate, data, settings.training.max_examples)
    except DatasetError as exc:
        raise APIError(400, f"Invalid training file: {exc}.", param="file", code="invalid_file") from exc
    record = await asyncio.to_thread(files.add, filename, purpose, data, examples)
    return public(record)


@router.get("", response_model=FileList)
async def list_files(files: FilesDep) -> FileList:
    return FileList(data=[public(f) for f in await asyncio.to_thread(files.list)])


@router.get("/{file_id}", response_model=FileObject)
async def get_file(file_id: str, files: FilesDep) -> FileObject:
    record = await asyncio.to_thread(files.get, file_id)
    if record is None:
        raise _not_found(file_id)
    return public(record)


@router.get(
    "/{file_id}/content", response_class=Response, responses={200: {"content": {"application/jsonl": {}}}}
)
async def file_content(file_id: str, files: FilesDep) -> Response:
    data = await asyncio.to_thread(files.content, file_id)
    if data is None:
        raise _not_found(file_id)
    return Response(data, media_type="application/jsonl")


@router.delete("/{file_id}", response_model=FileDeleted)
async def delete_file(file_id: str, files: FilesDep) -> FileDeleted:
    if not await asyncio.to_thread(files.delete, file_id):
        raise _not_found(file_id)
    return FileDeleted(id=file_id)
