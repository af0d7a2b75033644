"""OpenAI's files and fine-tuning objects, as the official SDK reads and writes them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.protocol.jobs import TrainProgressPublic

Auto = Literal["auto"]


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    status_details: str | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool = False


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class Hyperparameters(BaseModel):
    """OpenAI's fields plus each method's own; ``auto`` picks a default that suits the data size.

    LoRA fields (rank, alpha, dropout, target_modules) apply to ``supervised`` / ``lora`` and, with
    their own extras, to ``adalora`` (init_rank), ``loha``, ``lokr`` (decompose_factor) and ``ia3``
    (target_modules, feedforward_modules only); the soft-prompt fields to their method only: a field
    another method owns is refused with 400.
    """

    model_config = ConfigDict(extra="forbid")

    n_epochs: int | Auto = Field("auto", description="Passes over the data; auto: 3, more for small sets.")
    batch_size: int | Auto = Field(
        "auto", description="Examples per step; auto: 4 below 256 examples, else 8."
    )
    learning_rate_multiplier: float | Auto = Field(
        "auto", description="Multiplies the base learning rate 1e-3 (auto: 1)."
    )
    rank: int | None = Field(
        None,
        ge=1,
        description="LoRA rank (default 8), LoHa / LoKr rank (default 4: ΔW has rank ≤ r²), AdaLoRA's final rank budget (default 8).",
    )
    alpha: float | None = Field(
        None, gt=0, le=4096, description="Alpha (default 2 × rank; LoHa and LoKr: rank)."
    )
    dropout: float | None = Field(
        None, ge=0, lt=1, description="Dropout (LoHa / LoKr: rank dropout; default 0.05, LoHa / LoKr 0)."
    )
    init_rank: int | None = Field(
        None,
        ge=1,
        description="adalora: the rank every module starts at before pruning (default 1.5 × rank).",
    )
    decompose_factor: int | None = Field(
        None,
        ge=-1,
        le=4096,
        description="lokr: the Kronecker factor's size (default -1: as square as possible).",
    )
    feedforward_modules: list[str] | None = Field(
        None,
        max_length=32,
        description="ia3: targets whose input (not output) is scaled; a subset of target_modules "
        "(default down_proj).",
    )
    target_modules: list[str] | None = Field(
        None,
        min_length=1,
        max_length=32,
        description="Module names (default: every attention and MLP projection).",
    )
    num_virtual_tokens: int | None = Field(
        None,
        ge=1,
        le=512,
        description="Soft prompts: virtual tokens (default 20); they take window positions.",
    )
    init: Literal["text", "vocab", "random"] | None = Field(
        None,
        description="prompt_tuning: start from init_text (default when given, or the domain's description), "
        "from sampled vocabulary (default otherwise) or at random.",
    )
    init_text: str | None = Field(None, min_length=1, max_length=4000, description="prompt_tuning: the text.")
    encoder: Literal["mlp", "lstm"] | None = Field(
        None, description="p_tuning: the prompt encoder (default mlp)."
    )
    encoder_hidden_size: int | None = Field(
        None, ge=1, le=8192, description="p_tuning / prefix_tuning: the encoder's hidden size."
    )
    projection: bool | None = Field(
        None, description="prefix_tuning: train through an MLP reparameterization (default true)."
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=0,
        le=20,
        description="Epochs without a better validation loss before stopping (soft prompts: default 2; 0 never).",
    )


class MethodParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Method(BaseModel):
    """``{"type": T, T: {"hyperparameters": {...}}}``: supervised and lora both train a LoRA;
    adalora, loha, lokr and ia3 train PEFT's adapter of that kind, served as a converted LoRA;
    prompt_tuning, p_tuning and prefix_tuning train a soft prompt."""

    model_config = ConfigDict(extra="forbid")

    type: str = "supervised"
    supervised: MethodParams | None = None
    lora: MethodParams | None = None
    adalora: MethodParams | None = None
    loha: MethodParams | None = None
    lokr: MethodParams | None = None
    ia3: MethodParams | None = None
    prompt_tuning: MethodParams | None = None
    p_tuning: MethodParams | None = None
    prefix_tuning: MethodParams | None = None
    dpo: dict[str, Any] | None = None
    reinforcement: dict[str, Any] | None = None


class FineTuningJobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., min_length=1, max_length=256, description="The base model or a domain.")
    training_file: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="A fine-tune JSONL file. Soft prompts only: omit it with `model` = a domain to train on "
        "the domain's ingested documents (language modelling).",
    )
    validation_file: str | None = Field(None, max_length=64)
    suffix: str | None = Field(None, min_length=1, max_length=40)
    seed: int | None = Field(None, ge=0, le=2_147_483_647)
    method: Method | None = None
    hyperparameters: Hyperparameters | None = Field(None, description="Deprecated by OpenAI: use method.")
    metadata: dict[str, str] | None = Field(None, max_length=16)
    integrations: list[Any] | None = Field(None, max_length=0, description="Not supported: must be empty.")


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class HyperparametersOut(BaseModel):
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    learning_rate: float | None = None
    rank: int | None = None
    alpha: float | None = None
    dropout: float | None = None
    target_modules: list[str] | None = None
    init_rank: int | None = None
    decompose_factor: int | None = None
    feedforward_modules: list[str] | None = None
    warmup_fraction: float | None = None
    final_fraction: float | None = None
    num_virtual_tokens: int | None = None
    init: str | None = None
    init_text: str | None = None
    encoder: str | None = None
    encoder_hidden_size: int | None = None
    projection: bool | None = None
    early_stopping_patience: int | None = None
    validation_split: float | None = None


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    finished_at: int | None = None
    model: str
    fine_tuned_model: str | None = None
    organization_id: str = "tailor"
    result_files: list[str] = Field(default_factory=list)
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
    training_file: str
    validation_file: str | None = None
    hyperparameters: HyperparametersOut
    method: dict[str, Any]
    trained_tokens: int | None = None
    error: JobError | None = None
    seed: int
    estimated_finish: int | None = None
    integrations: list[Any] | None = None
    user_provided_suffix: str | None = None
    metadata: dict[str, str] | None = None
    progress: TrainProgressPublic = Field(default_factory=TrainProgressPublic)
    conversion: dict[str, Any] | None = Field(
        None,
        description="adalora / loha / lokr / ia3: how the result is served (served_by, rank, fidelity, "
        "agreement with PEFT's own model); per module in GET /v1/adapters/{fine_tuned_model}.",
    )


class FineTuningJobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool = False


class FineTuningEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"] = "message"


class FineTuningEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningEvent]
    has_more: bool = False
