"""``POST /v1/embeddings`` models (OpenAI's shape, with vLLM's ``truncate_prompt_tokens``).

Token-id inputs are ids of the embedder's own tokenizer (as vLLM reads them), not OpenAI's.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_INPUTS = 2048
MAX_INPUT_CHARS = 100_000

_Text = Annotated[str, Field(max_length=MAX_INPUT_CHARS)]
_Ids = Annotated[list[int], Field(min_length=1, max_length=MAX_INPUT_CHARS)]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str = Field(..., min_length=1, max_length=256)
    input: (
        _Text
        | Annotated[list[_Text], Field(min_length=1, max_length=MAX_INPUTS)]
        | _Ids
        | Annotated[list[_Ids], Field(min_length=1, max_length=MAX_INPUTS)]
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    truncate_prompt_tokens: int | None = Field(
        None,
        ge=-1,
        description="vLLM's extension: keep the last N tokens of longer inputs (-1: the model's limit).",
    )


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingUsage
