"""Response models of the soft-prompt routes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class SoftPromptPublic(BaseModel):
    object: Literal["soft_prompt"] = "soft_prompt"
    id: str = Field(description="The soft prompt's name, used as `model` (or `soft_prompt`) in requests.")
    method: Literal["prompt_tuning", "p_tuning", "prefix_tuning"]
    num_virtual_tokens: int = Field(description="Context positions it takes in front of every prompt.")
    served_by: Literal["vllm", "transformers"] = Field(
        description="vllm: prompt embeddings in vLLM; transformers: the prefix-tuning path beside it."
    )
    config: dict[str, Any] = Field(description="The method's settings (init, encoder, projection, ...).")
    source: Literal["import", "fine-tune"]
    domain: str | None = Field(None, description="Domain whose profile requests to this soft prompt use.")
    fine_tuning_job: str | None = None
    base_model: str = Field(description="The backbone it was made for (its fingerprint matched at load).")
    parent: str = Field(description="The backbone it runs on.")
    size_bytes: int
    created_at: float


class SoftPromptList(BaseModel):
    object: Literal["list"] = "list"
    data: list[SoftPromptPublic]
    warnings: list[str] = Field(
        default_factory=list, description="Saved prompts set aside at start-up, and why."
    )


class SoftPromptDeleted(BaseModel):
    id: str
    object: Literal["soft_prompt"] = "soft_prompt"
    deleted: bool = True
    detached_from: list[str] = Field(
        default_factory=list, description="Domains whose profile named it and no longer does (force=true)."
    )
