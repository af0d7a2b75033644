"""Request and response models for documents, search and jobs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.protocol.profiles import FusionSettings

Metadata = dict[str, str | int | float | bool | None]


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str | None = Field(None, min_length=1, max_length=256)
    text: str = Field(..., min_length=1, max_length=20_000_000)
    title: str | None = Field(None, max_length=1000)
    metadata: Metadata = Field(default_factory=dict, max_length=64)


class DocumentsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    documents: list[DocumentIn] = Field(..., min_length=1, max_length=10_000)


class DocumentPublic(BaseModel):
    object: Literal["document"] = "document"
    id: str
    filename: str | None
    title: str | None
    content_type: str | None
    language: str | None
    page_count: int | None
    sha256: str
    parent_id: str | None
    metadata: dict[str, Any]
    status: str = Field(
        description="ok, needs_ocr (no text without OCR), container (archive or e-mail whose content is its attachments) or empty"
    )
    warnings: list[str]
    chunk_count: int
    size_bytes: int | None
    created_at: float
    updated_at: float


class DocumentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DocumentPublic]
    total: int
    offset: int
    limit: int


class IngestResultPublic(BaseModel):
    id: str | None
    filename: str | None
    status: Literal["created", "updated", "unchanged", "duplicate", "error"]
    document_status: str | None = None
    chunks: int = 0
    error: str | None = None
    warnings: list[str] = Field(default_factory=list)
    duplicate_of: str | None = None
    parent_id: str | None = None


class IngestResponse(BaseModel):
    object: Literal["ingest.result"] = "ingest.result"
    job_id: str
    domain: str
    results: list[IngestResultPublic]
    errors: list[IngestResultPublic]
    documents: list[DocumentPublic] = Field(description="Records of documents created or updated.")


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    query: str = Field(..., min_length=1, max_length=4000)
    top_k: int = Field(5, ge=1, le=100)
    mode: Literal["dense", "bm25", "hybrid"] | None = Field(
        None, description="Default: the domain profile's retrieval mode (hybrid unless tuned)."
    )
    fusion: FusionSettings | None = Field(
        None, description="Hybrid fusion; default: the profile's. Fields left out keep the profile's."
    )
    rerank: bool | None = Field(None, description="Default: the profile's retrieval.rerank.")
    filter: dict[str, Any] | None = Field(None, max_length=32)
    min_score: float | None = None


class SearchHitPublic(BaseModel):
    document_id: str
    filename: str | None
    title: str | None
    chunk_id: int
    text: str
    score: float
    location: dict[str, Any] = Field(description="page, section, sheet and/or row of the passage")
    language: str | None = None
    parent_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[SearchHitPublic]


class Source(SearchHitPublic):
    """A passage given to the model, numbered as in the prompt ([1], [2], ...)."""

    index: int
