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

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ROPE_TYPES = ("linear", "dynamic", "yarn")


class RopeScaling(BaseModel):
    """RoPE scaling of the backbone, as transformers and vLLM spell it (``rope_parameters``).

    Set as JSON: ``TAILOR_ENGINE__ROPE_SCALING='{"rope_type": "yarn", "factor": 4}'``. What the
    factor and type mean for the served window is worked out in ``app.window``; here only what
    can be judged without the model is checked, with messages that say what would work.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    rope_type: str = Field(
        validation_alias=AliasChoices("rope_type", "type"),
        description="'linear' (position interpolation), 'dynamic' (NTK-aware base scaling) or "
        "'yarn' (per-frequency interpolation with attention temperature).",
    )
    factor: float = Field(description="Window multiplier over the original positions (>= 1).")
    original_max_position_embeddings: int | None = Field(
        None, description="Positions the backbone was trained on; empty reads the model's config."
    )
    beta_fast: float | None = Field(None, gt=0, description="YaRN: fast rotation boundary (32).")
    beta_slow: float | None = Field(None, gt=0, description="YaRN: slow rotation boundary (1).")
    attention_factor: float | None = Field(
        None, gt=0, description="YaRN: attention temperature; empty uses 0.1 ln(factor) + 1."
    )

    @field_validator("rope_type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in ROPE_TYPES:
            raise ValueError(
                f"rope_type {value!r} is not supported; use one of {', '.join(ROPE_TYPES)} "
                "(or leave rope_scaling empty for the backbone's native window)"
            )
        return value

    @field_validator("factor")
    @classmethod
    def _factor_at_least_one(cls, value: float) -> float:
        if not value >= 1.0 or value > 64.0:
            raise ValueError(
                f"factor {value:g} must be between 1 and 64: it multiplies the backbone's native "
                "window (2 doubles it; 1 leaves it as is). To shorten the window, set "
                "max_model_len instead"
            )
        return value

    @field_validator("original_max_position_embeddings")
    @classmethod
    def _positive_original(cls, value: int | None) -> int | None:
        if value is not None and value < 16:
            raise ValueError(f"original_max_position_embeddings {value} is too small (at least 16)")
        return value

    @model_validator(mode="after")
    def _yarn_fields(self) -> RopeScaling:
        yarn_only = [
            f for f in ("beta_fast", "beta_slow", "attention_factor") if getattr(self, f) is not None
        ]
        if yarn_only and self.rope_type != "yarn":
            raise ValueError(f"{', '.join(yarn_only)} only apply to rope_type 'yarn'")
        fast = self.beta_fast if self.beta_fast is not None else 32.0
        slow = self.beta_slow if self.beta_slow is not None else 1.0
        if fast <= slow:
            raise ValueError(f"beta_fast ({fast:g}) must be larger than beta_slow ({slow:g})")
        return self

    @property
    def limit(self) -> int | None:
        """The longest window this scaling covers, when the original positions are known."""
        if self.original_max_position_embeddings is None:
            return None
        return int(self.original_max_position_embeddings * self.factor)


class EngineSettings(BaseModel):
    """How the vLLM engine is started. Defaults suit a small CPU machine."""

    backend: Literal["vllm", "remote"] = Field(
        "vllm",
        description="Engine backend: 'vllm' embeds vLLM's async engine in the service; 'remote' serves "
        "the backbone from a fleet of `vllm serve` replicas listed in `servers` (`tailor fleet` starts "
        "them on one machine).",
    )
    servers: str = Field(
        "",
        description="Backend remote: the replicas' base URLs, comma-separated "
        "(http://h1:8001,http://h2:8001). Each is a plain `vllm serve` of the same backbone with "
        "--enable-lora --enable-prompt-embeds and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True.",
    )
    server_api_key: str = Field("", description="Backend remote: the replicas' --api-key, if they have one.")
    routing: Literal["lora_affinity", "round_robin", "least_loaded"] = Field(
        "lora_affinity",
        description="Backend remote: how a replica is picked per request. lora_affinity scores adapter "
        "residency, load and domain affinity (rendezvous hashing with bounded load); the other two "
        "are for comparison.",
    )
    replica_adapters_dir: str = Field(
        "",
        description="Backend remote: where the replicas mount the shared adapters volume, when not at "
        "the same path as Tailor's adapters dir.",
    )
    replica_timeout_s: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="Backend remote: longest wait for a replica's next streamed token (the first "
        "includes prefill); past it the replica counts as down.",
    )
    replica_connect_timeout_s: float = Field(
        3.0, gt=0, le=120, description="Backend remote: longest wait to connect to a replica."
    )
    probe_interval_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Backend remote: how often healthy replicas' queue depth (/metrics) is read and "
        "down replicas are considered for a probe.",
    )
    probe_backoff_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Backend remote: first wait before probing a replica that went down; doubles "
        "per failed probe up to probe_backoff_max_s.",
    )
    probe_backoff_max_s: float = Field(
        5.0, gt=0, le=600, description="Backend remote: longest wait between probes of a down replica."
    )
    probe_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Backend remote: longest wait for a probe (health, models, metrics)."
    )
    fleet_wait_s: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="Backend remote: at start, how long to wait for the first replica to answer "
        "before the start counts as failed (and is retried).",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Weight/activation dtype. 'auto' is float32 on CPU (matches transformers' "
        "greedy output exactly) and bfloat16 on GPU.",
    )
    max_model_len: int | None = Field(
        None,
        ge=16,
        description="Context window in tokens; empty uses the model's own, or all that "
        "rope_scaling allows. Beyond the native window it needs rope_scaling.",
    )
    context_length: int | None = Field(
        None,
        ge=16,
        le=1_048_576,
        description="The simple way to a long window (`tailor serve --context-length`): the window "
        "you want; beyond the backbone's native one Tailor applies YaRN with the factor that "
        "window needs. Use instead of rope_scaling and max_model_len.",
    )
    rope_scaling: RopeScaling | None = Field(
        None,
        description='RoPE scaling as JSON, e.g. {"rope_type": "yarn", "factor": 4.0, '
        '"original_max_position_embeddings": 8192}; types linear, dynamic, yarn. The same '
        "scaling is applied to serving, the prefix-tuning path and training.",
    )
    full_window_requests: int = Field(
        1,
        ge=1,
        le=1024,
        description="Requests using the whole window that the KV cache must hold at once; checked "
        "at start (on CPU against kv_cache_space_gib) with the space it would take.",
    )
    kv_cache_space_gib: float = Field(
        2.0,
        gt=0,
        le=1024,
        description="KV-cache memory on CPU machines (VLLM_CPU_KVCACHE_SPACE), in whole GiB: vLLM's "
        "CPU backend reads an integer.",
    )

    @field_validator("kv_cache_space_gib")
    @classmethod
    def _whole_gib(cls, value: float) -> float:
        if value != int(value):
            raise ValueError(
                f"kv_cache_space_gib must be a whole number of GiB (vLLM's CPU backend), not {value:g}"
            )
        return value

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

    @property
    def server_urls(self) -> list[str]:
        return [u.strip().rstrip("/") for u in self.servers.split(",") if u.strip()]

    @model_validator(mode="after")
    def _servers_for_remote(self) -> EngineSettings:
        for url in self.server_urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"engine.servers: {url!r} is not an http(s) URL")
        if self.backend == "remote" and not self.server_urls:
            raise ValueError(
                "engine.backend 'remote' needs engine.servers (TAILOR_ENGINE__SERVERS=http://h1:8001,...)"
            )
        return self

    @model_validator(mode="after")
    def _one_way_to_the_window(self) -> EngineSettings:
        if self.context_length is not None and self.rope_scaling is not None:
            raise ValueError(
                "set context_length (Tailor picks YaRN for it) or rope_scaling (with max_model_len), not both"
            )
        if (
            self.context_length is not None
            and self.max_model_len is not None
            and self.context_length != self.max_model_len
        ):
            raise ValueError(
                f"context_length {self.context_length} and max_model_len {self.max_model_len} "
                "disagree; context_length alone sets the window"
            )
        rope = self.rope_scaling
        if rope is not None and rope.limit is not None and self.max_model_len is not None:
            if self.max_model_len > rope.limit:
                need = self.max_model_len / rope.original_max_position_embeddings
                raise ValueError(
                    f"max_model_len {self.max_model_len} is beyond what factor {rope.factor:g} "
                    f"allows over {rope.original_max_position_embeddings} positions ({rope.limit}); "
                    f"use factor >= {need:.4g}, or max_model_len <= {rope.limit}"
                )
        return self


class KnowledgeSettings(BaseModel):
    """Knowledge stores: ingestion limits, chunking, vector index, retrieval for chat."""

    backend: Literal["faiss", "milvus"] = Field(
        "faiss",
        description="Where knowledge stores live: 'faiss' (FAISS + SQLite under the data dir, embedded) "
        "or 'milvus' (Milvus: shared by every Tailor process pointing at it).",
    )
    milvus_uri: str = Field(
        "",
        max_length=2048,
        description="Backend milvus: a local path ending in .db runs Milvus Lite embedded (one process "
        "per path); http(s)://host:19530 a Milvus standalone or cluster. Empty: <data_dir>/milvus.db.",
    )
    milvus_token: str = Field("", description="Backend milvus: the server's 'user:password' or API key.")
    milvus_db: str = Field("", max_length=64, description="Backend milvus: database name (empty: default).")
    milvus_prefix: str = Field(
        "tailor_",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,40}$",
        description="Backend milvus: collection name prefix (deployments sharing a Milvus pick their own).",
    )
    milvus_index: Literal["FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX"] = Field(
        "FLAT",
        description="Backend milvus: dense index type of new domains (FLAT exact; HNSW/AUTOINDEX for "
        "large domains on a Milvus server).",
    )
    milvus_timeout_s: float = Field(
        10.0, gt=0, le=600, description="Backend milvus: longest wait for one call before a 503."
    )
    milvus_stale_write_s: float = Field(
        600.0,
        ge=0,
        description="Backend milvus: a document write unfinished this long is treated as crashed and "
        "cleaned up (longer than any one document's write).",
    )
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
    query_prefix: str = Field(
        "",
        max_length=200,
        description="Text put before every query the embedder reads: models trained with prefixes "
        "need theirs (e5: 'query: ').",
    )
    passage_prefix: str = Field(
        "", max_length=200, description="Text put before every passage the embedder reads (e5: 'passage: ')."
    )
    title_weight: float = Field(
        2.0,
        ge=0.0,
        le=20.0,
        description="BM25: a query word in a chunk's head (document title, file name, section, "
        "sheet) counts this many times a word in its text.",
    )
    reranker: str = Field(
        "",
        description="A sentence-transformers cross-encoder (local folder or hub id) for domains with "
        "retrieval.rerank; empty: no reranking stage.",
    )
    rerank_depth: int = Field(20, ge=1, le=200, description="Fused candidates the reranker re-scores.")
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


class ConversionSettings(BaseModel):
    """AdaLoRA, LoHa, LoKr and IA3 adapters served as LoRA: how close the conversion must be."""

    energy: float = Field(
        0.999,
        gt=0,
        le=1,
        description="Share of each module's weight-delta energy (sum of squared singular values) the "
        "LoRA conversion of a LoHa, LoKr or IA3 adapter keeps, at the smallest rank that does (capped "
        "by engine.max_lora_rank). AdaLoRA converts exactly.",
    )
    max_rank: int = Field(
        0,
        ge=0,
        le=512,
        description="Largest rank a conversion may use; 0 means engine.max_lora_rank (the largest vLLM serves).",
    )
    min_agreement: float = Field(
        0.95,
        ge=0,
        le=1,
        description="A converted adapter whose greedy output agrees with PEFT's own model on fewer than "
        "this share of tokens is not served by vLLM (see fallback); checked when it is loaded, imported "
        "or trained; 0 turns the check off.",
    )
    fallback: Literal["transformers", "refuse"] = Field(
        "transformers",
        description="A converted adapter below min_agreement: 'transformers' serves PEFT's own model "
        "on Tailor's transformers path (exact; slower, no structured outputs or logprobs), 'refuse' "
        "refuses the load or the job with the numbers.",
    )
    prompts: int = Field(
        8, ge=1, le=64, description="Prompts the agreement check decodes (fixed ones, then a job's own)."
    )
    tokens: int = Field(24, ge=1, le=256, description="Greedy tokens decoded per agreement prompt.")
    timeout_s: float = Field(
        600, gt=0, description="Longest an import's conversion process may run before it is refused."
    )


class GateSettings(BaseModel):
    """``model: "auto"`` and routing domains: how the gate scores domains and when it declines."""

    threshold: float = Field(
        0.15,
        ge=-1,
        le=1,
        description="Similarity gate: the best domain's score (mean cosine of the query to its "
        "description, nearest example and document centroid) must reach this, or the base model serves.",
    )
    trained_threshold: float = Field(
        0.5, ge=0, le=1, description="Trained gate: the best domain's probability must reach this."
    )
    margin: float = Field(
        0.01,
        ge=0,
        le=1,
        description="A best score within this of the next is a tie: the fallback (base model or "
        "routing domain) serves, and the response says which domains tied.",
    )
    centroid_sample: int = Field(
        64, ge=1, le=4096, description="Chunks per domain averaged into its document centroid."
    )
    centroid_ttl_s: float = Field(
        60, ge=0, description="Seconds a domain's document centroid is reused before it is computed again."
    )
    max_training_examples: int = Field(
        20_000, ge=10, description="Most labelled queries one gate-training job accepts."
    )


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
    schema_in_prompt: bool = Field(
        False,
        description="Chat requests with a JSON schema (response_format json_schema, structured_outputs "
        "json) also show the schema to the model in a system note. Off by default: on SmolLM2 it helped "
        "when the prompt already asks for that JSON and hurt when it does not (docs/benchmarks.md, "
        "Ecosystem); try it on your backbone.",
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
    allow_open: bool = Field(
        False,
        description="Allow binding a non-loopback address with no API keys (a warning is printed).",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated extra Host names the server answers to (besides localhost, "
        "127.0.0.1, [::1] and the bind address); '*' turns the Host check off.",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated web origins (https://app.example) allowed to send state-changing "
        "requests from a browser without a key; they also get CORS headers. '*' allows any origin.",
    )
    drain_timeout_s: float = Field(
        30.0,
        ge=0.0,
        le=3600.0,
        description="Longest wait of an adapter unload or soft-prompt delete for the requests using it; "
        "after that it answers 409 and the adapter stays loaded.",
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
    gate: GateSettings = Field(
        default_factory=GateSettings, description='The domain gate of `model: "auto"` (TAILOR_GATE__*).'
    )
    conversion: ConversionSettings = Field(
        default_factory=ConversionSettings,
        description="AdaLoRA / LoHa / LoKr / IA3 served as LoRA (TAILOR_CONVERSION__*).",
    )

    _split_api = field_validator("api_keys", "admin_keys", mode="before")(_split_keys)
    _split_web = field_validator("allowed_hosts", "allowed_origins", mode="before")(_split_keys)

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

    @property
    def binds_loopback(self) -> bool:
        host = self.host.strip("[]")
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def bind_problem(self) -> str | None:
        """Why binding ``host`` is unsafe, or None. Without keys only loopback is allowed, unless
        ``allow_open`` says the operator accepts it (then ``open_bind_warning`` is printed)."""
        if self.auth_enabled or self.binds_loopback or self.allow_open:
            return None
        return (
            f"refusing to bind {self.host}: no API keys are configured, so anyone who can reach "
            "that address could use the model and admin routes. Set TAILOR_API_KEYS and/or "
            "TAILOR_ADMIN_KEYS, bind 127.0.0.1, or set TAILOR_ALLOW_OPEN=1 to accept the risk."
        )

    def open_bind_warning(self) -> str | None:
        if self.auth_enabled or self.binds_loopback:
            return None
        return (
            f"serving {self.host} with no API keys (TAILOR_ALLOW_OPEN=1): anyone who can reach it can "
            "ingest documents, load adapters and start training jobs"
        )
