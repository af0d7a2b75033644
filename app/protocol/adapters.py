"""Request and response models of the adapter routes (and their vLLM-compatible aliases)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class AdapterLoad(_Strict):
    """``POST /v1/adapters`` as JSON: a PEFT LoRA folder inside the adapters dir."""

    name: str = Field(..., min_length=1, max_length=64, description="Name requests use as `model`.")
    path: str = Field(
        ...,
        min_length=1,
        max_length=1024,
        description="Folder relative to the adapters dir (or absolute inside it).",
    )


class LoadLoRAAdapterRequest(BaseModel):
    """vLLM's ``POST /v1/load_lora_adapter`` body."""

    model_config = ConfigDict(extra="ignore", strict=True)

    lora_name: str = Field(..., min_length=1, max_length=64)
    lora_path: str = Field(..., min_length=1, max_length=1024)


class UnloadLoRAAdapterRequest(BaseModel):
    """vLLM's ``POST /v1/unload_lora_adapter`` body."""

    model_config = ConfigDict(extra="ignore", strict=True)

    lora_name: str = Field(..., min_length=1, max_length=64)
    lora_int_id: int | None = None


class AdapterPublic(BaseModel):
    object: Literal["adapter"] = "adapter"
    id: str = Field(description="The adapter's name, used as `model` (or `adapter`) in requests.")
    path: str = Field(description="Folder relative to the adapters dir.")
    source: Literal["path", "upload", "fine-tune", "import"]
    method: str = Field(
        "lora",
        description="The PEFT method: lora, or adalora / loha / lokr / ia3 served as a converted LoRA.",
    )
    served_by: Literal["vllm", "transformers"] = Field(
        "vllm",
        description="vllm: a LoRA (trained, or converted within the agreement bar); transformers: PEFT's "
        "own model beside vLLM (its conversion fell below the bar; no structured outputs or logprobs).",
    )
    rank: int
    alpha: float
    target_modules: list[str]
    size_bytes: int
    base_model: str | None = Field(None, description="The base model recorded in adapter_config.json.")
    domain: str | None = Field(None, description="Domain whose profile requests to this adapter use.")
    parent: str = Field(description="The backbone it runs on.")
    conversion: dict[str, Any] | None = Field(
        None,
        description="A converted adapter: the served rank (and per module), the fidelity (share of each "
        "module's weight-delta energy kept; the weakest module's and the mean), modules capped by the "
        "server's largest rank, and the agreement of greedy tokens with PEFT's own model.",
    )
    created_at: float


class AdapterList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AdapterPublic]
    warnings: list[str] = Field(default_factory=list, description="Adapters set aside at start-up, and why.")


class AdapterDeleted(BaseModel):
    object: Literal["adapter.deleted"] = "adapter.deleted"
    id: str
    deleted: bool = True
    detached_from: list[str] = Field(
        default_factory=list, description="Domains whose profile named it and no longer does (force=true)."
    )
