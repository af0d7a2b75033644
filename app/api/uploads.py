"""Multipart uploads of a named set of small files (adapters, soft prompts): one reader for both."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile

from app.protocol.errors import APIError

#: The part of an upload body a multipart request's files may come in.
FILE_FIELDS = ("files", "files[]", "file")

#: OpenAPI description of such a body (FastAPI cannot infer it: the routes read the form themselves).
NAMED_FILES_BODY = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "required": ["name", "files"],
            "properties": {
                "name": {"type": "string"},
                "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
            },
        }
    }
}


async def read_named_files(
    request: Request, max_bytes: int, too_large_code: str
) -> tuple[str, dict[str, bytes]]:
    """The ``name`` field and the files (by base name) of a multipart body; each at most ``max_bytes``."""
    async with request.form(max_files=4, max_fields=4) as form:
        name = form.get("name")
        if not isinstance(name, str) or not name:
            raise APIError(422, "The upload needs a 'name' field.", param="name", code="invalid_value")
        files: dict[str, bytes] = {}
        for key, value in form.multi_items():
            if not isinstance(value, UploadFile):
                continue
            if key not in FILE_FIELDS:
                raise APIError(
                    422, f"Unexpected file field '{key}'; use 'files'.", param=key, code="invalid_value"
                )
            fname = (value.filename or "").rsplit("/", 1)[-1]
            data = await value.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise APIError(
                    413, f"'{fname}' exceeds {max_bytes} bytes.", param="files", code=too_large_code
                )
            files[fname] = data
    return name, files
