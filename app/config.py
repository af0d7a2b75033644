"""Typed settings for the service.

Every field carries a description (a test checks this, and ``tailor settings`` prints them), and
everything is read from ``TAILOR_*`` environment variables (nested engine fields use a double
underscore: ``TAILOR_ENGINE__DTYPE``). Nothing is built at import time: ``create_app(settings)``
takes a ``Settings`` so tests can inject their own.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class RopeScalingSettings(BaseModel):
    """Long-context RoPE scaling of the backbone (applied by a later release of the engine)."""

    type: Literal["none", "linear", "dynamic", "yarn"] = Field(
        "none", description="RoPE scaling method; 'none' keeps the backbone's native window."
    )
    factor: float = Field(
        1.0, ge=1.0, le=16.0, description="Window multiplier over the backbone's native positions."
    )


class EngineSettings(BaseModel):
    """How the vLLM engine is started. Defaults suit a small CPU machine."""

    backend: Literal["vllm"] = Field(
        "vllm", description="Engine backend; 'vllm' embeds vLLM's async engine in the service."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Weight/activation dtype. 'auto' is float32 on CPU (matches transformers' "
        "greedy output exactly) and bfloat16 on GPU.",
    )
    max_model_len: int | None = Field(
        None, ge=16, description="Context window in tokens; empty uses the model's own."
    )
    kv_cache_space_gib: float = Field(
        2.0, gt=0, le=1024, description="KV-cache memory on CPU machines (VLLM_CPU_KVCACHE_SPACE)."
    )
    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="Fraction of GPU memory vLLM may use (GPU machines only)."
    )
    max_num_seqs: int = Field(32, ge=1, le=1024, description="Most sequences the engine batches in one step.")
    max_loras: int = Field(
        4,
        ge=0,
        le=64,
        description="Different LoRA adapters active in one batch (least recently used leave first); "
        "0 turns LoRA off.",
    )
    max_cpu_loras: int = Field(
        16,
        ge=1,
        le=1024,
        description="LoRA adapters kept loaded in memory (least recently used are dropped and "
        "reloaded from disk when asked for again); at least max_loras.",
    )
    max_lora_rank: int = Field(
        16, ge=1, le=512, description="Largest LoRA rank accepted (and pre-allocated by vLLM)."
    )
    prefix_max_batch: int = Field(
        8,
        ge=1,
        le=256,
        description="Most sequences the prefix-tuning path (transformers, beside vLLM) decodes together.",
    )
    enforce_eager: bool = Field(
        True, description="Skip graph compilation: on CPU it costs 60-90 s per start."
    )
    cpu_threads_bind: str = Field(
        "all",
        description="VLLM_CPU_OMP_THREADS_BIND: 'all' binds every core (about +40% on 2 cores "
        "over vLLM's default of reserving one), 'auto' keeps vLLM's default, or a core list "
        "such as '0-3'.",
    )
    seed: int = Field(0, description="Engine seed for reproducible sampling.")
    preload_tcmalloc: bool = Field(
        True,
        description="`tailor serve` restarts itself once with tcmalloc preloaded when "
        "libtcmalloc_minimal is installed (`make` installs it as root on Debian/Ubuntu): with "
        "glibc's allocator the CPU engine's heap grew by ~1 GB in 10 minutes of mixed traffic.",
    )
    start_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="Tries to start the engine before `tailor serve` gives up and exits non-zero. "
        "Only failures that can be transient are retried; a bad model path, too little memory or "
        "an invalid setting stops at once.",
    )
    retry_backoff_s: float = Field(
        2.0, gt=0, le=600, description="Wait before the first retry of a failed engine start; doubles."
    )
    retry_backoff_max_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Longest wait between retries; restarts after a crash of a serving engine "
        "retry forever at this pace.",
    )
    rope_scaling: RopeScalingSettings = Field(
        default_factory=RopeScalingSettings,
        description="Long-context RoPE scaling (placeholder until the long-context release).",
    )


class KnowledgeSettings(BaseModel):
    """Knowledge stores: ingestion limits, chunking, vector index, retrieval for chat."""

    chunk_tokens: int = Field(
        200, ge=16, le=512, description="Chunk size in embedder tokens (all-MiniLM reads 256)."
    )
    chunk_overlap: int = Field(32, ge=0, le=256, description="Tokens repeated between chunks.")
    index_kind: Literal["auto", "flat", "ivf"] = Field(
        "auto", description="Vector index: exact 'flat', approximate 'ivf', or 'auto' (by size)."
    )
    ivf_threshold: int = Field(
        50_000, ge=1, description="With 'auto', chunks past which the index becomes IVF."
    )
    nprobe: int = Field(16, ge=1, le=4096, description="IVF lists searched per query.")
    embed_batch: int = Field(128, ge=1, le=4096, description="Chunks embedded per batch.")
    embed_device: str = Field(
        "", description="Embedder device ('cpu', 'cuda'); empty picks CUDA when present."
    )
    max_upload_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Largest upload request to the documents route."
    )
    max_file_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest single file accepted for ingestion."
    )
    max_files: int = Field(500, ge=1, le=10_000, description="Most files in one upload request.")
    sync_max_documents: int = Field(
        8, ge=0, description="Uploads with at most this many documents answer when done (201)."
    )
    sync_max_bytes: int = Field(
        4 * 1024 * 1024,
        ge=0,
        description="...and at most this many bytes; larger uploads answer 202 with a job id.",
    )


class TrainingSettings(BaseModel):
    """Fine-tuning inside the service: training files, the trainer process and its limits."""

    threads: int = Field(
        0,
        ge=0,
        le=256,
        description="CPU threads of the trainer process; 0 takes half the cores, so serving keeps "
        "the other half.",
    )
    max_file_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest training or validation file accepted (413 beyond)."
    )
    max_examples: int = Field(50_000, ge=1, description="Most lines in one training file.")
    max_example_tokens: int = Field(
        1024,
        ge=16,
        description="Examples longer than this (prompt + answer, in backbone tokens) are refused at "
        "job creation with the line that is too long.",
    )
    max_rank: int = Field(64, ge=1, le=512, description="Largest LoRA rank a job may ask for.")
    max_epochs: int = Field(50, ge=1, le=1000, description="Largest n_epochs a job may ask for.")


def _split_keys(value: object) -> object:
    if isinstance(value, str):
        return [k.strip() for k in value.split(",") if k.strip()]
    return value


class Settings(BaseSettings):
    """Service settings; see README "Settings" for the table built from these descriptions."""

    model_config = SettingsConfigDict(
        env_prefix="TAILOR_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port of the HTTP server.")
    data_dir: Path = Field(
        Path("./data"), description="Where prepared models, stores and profiles are persisted."
    )
    model: str = Field(
        "",
        description="Backbone: a local checkpoint dir or a hub id (hub ids need the model in the "
        "local cache; the hub is never contacted). Empty means the bundled SmolLM2-135M-Instruct "
        "prepared under the data dir.",
    )
    served_model_name: str = Field(
        "",
        description="Name clients use as `model` for the bare backbone; empty derives it from "
        "the model path.",
    )
    embedder: str = Field(
        "",
        description="Sentence-transformers embedder dir or hub id; empty means the bundled all-MiniLM-L6-v2.",
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated query keys; when set (or admin keys are), every /v1 route "
        "needs `Authorization: Bearer <key>`.",
    )
    admin_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated admin keys; they can also call admin routes.",
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest JSON request body accepted (413 beyond)."
    )
    default_max_tokens: int = Field(
        512,
        ge=1,
        description="Completion length when a request sets no max_tokens (capped to what is "
        "left of the context window).",
    )
    default_temperature: float = Field(
        0.0,
        ge=0.0,
        le=2.0,
        description="Temperature when neither the request nor the domain sets one (requests with "
        "n > 1 then get 1.0). Greedy by default: the 135M default backbone drifts into "
        "nonsense on roughly one sampled answer in five even at 0.2.",
    )
    default_top_p: float = Field(
        0.9, gt=0.0, le=1.0, description="top_p when a request sets none (SmolLM2's recommendation)."
    )
    max_n: int = Field(8, ge=1, le=128, description="Largest `n` (choices per request) accepted.")
    adapters_dir: Path | None = Field(
        None,
        description="Folder of LoRA adapters: paths given to the adapter routes must lie inside it. "
        "Empty means `<data dir>/adapters`.",
    )
    max_adapter_bytes: int = Field(
        1024 * 1024 * 1024, ge=1024, description="Largest adapter weights file accepted (413 beyond)."
    )
    max_soft_prompt_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Largest soft-prompt file accepted by the import route (413 beyond).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of the service."
    )
    engine: EngineSettings = Field(
        default_factory=EngineSettings, description="Engine settings (TAILOR_ENGINE__*)."
    )
    knowledge: KnowledgeSettings = Field(
        default_factory=KnowledgeSettings,
        description="Knowledge-store settings (TAILOR_KNOWLEDGE__*).",
    )
    training: TrainingSettings = Field(
        default_factory=TrainingSettings, description="Fine-tuning settings (TAILOR_TRAINING__*)."
    )

    _split_api = field_validator("api_keys", "admin_keys", mode="before")(_split_keys)

    @model_validator(mode="after")
    def _keys_are_distinct(self) -> Settings:
        if set(self.api_keys) & set(self.admin_keys):
            raise ValueError("a key cannot be both a query key and an admin key")
        return self

    @property
    def adapters_path(self) -> Path:
        return self.adapters_dir if self.adapters_dir is not None else self.data_dir / "adapters"

    @property
    def soft_prompts_path(self) -> Path:
        """Trained and imported soft prompts, one folder each (managed by the service)."""
        return self.data_dir / "soft_prompts"

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys or self.admin_keys)

    def bind_problem(self) -> str | None:
        """Why binding ``host`` is unsafe, or None. Without keys only loopback is allowed."""
        if self.auth_enabled:
            return None
        host = self.host.strip("[]")
        if host == "localhost":
            return None
        try:
            if ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            pass
        return (
            f"refusing to bind {self.host}: no API keys are configured, so anyone who can reach "
            "that address could use the model and admin routes. Set TAILOR_API_KEYS and/or "
            "TAILOR_ADMIN_KEYS, or bind 127.0.0.1."
        )
