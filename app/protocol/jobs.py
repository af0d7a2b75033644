"""The generic job view (``GET /v1/jobs/{id}``), with the progress fields each kind of job needs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from app.protocol.documents import IngestResultPublic

if TYPE_CHECKING:
    from app.jobs import Job


class ProgressPublic(BaseModel):
    """Ingestion: documents and chunks done of those submitted."""

    documents_total: int = 0
    documents_done: int = 0
    chunks_total: int = 0
    chunks_done: int = 0


class OptimizeProgressPublic(BaseModel):
    """Template optimization: held-out examples scored (over all candidate templates)."""

    examples_total: int = 0
    examples_done: int = 0


class TrainProgressPublic(BaseModel):
    """Training: optimizer steps, epochs and the latest losses."""

    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    n_epochs: int = 0
    train_loss: float | None = None
    valid_loss: float | None = None
    trained_tokens: int = 0


_PROGRESS: dict[str, type[BaseModel]] = {
    "ingest": ProgressPublic,
    "optimize": OptimizeProgressPublic,
    "train": TrainProgressPublic,
}


class JobPublic(BaseModel):
    object: Literal["job"] = "job"
    id: str
    kind: Literal["ingest", "optimize", "train"]
    domain: str | None
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
    progress: ProgressPublic | OptimizeProgressPublic | TrainProgressPublic
    results: list[IngestResultPublic] = Field(default_factory=list)
    errors: list[IngestResultPublic] = Field(default_factory=list, description="Files that failed.")
    error: str | None = None
    optimization: dict | None = Field(None, description="For optimize jobs: the table of scores.")
    fine_tuning_job: str | None = Field(None, description="For train jobs: the fine-tuning job's id.")
    created_at: float
    updated_at: float


def job_public(job: Job) -> JobPublic:
    result = job.result or {}
    return JobPublic(
        id=job.id,
        kind=job.kind,
        domain=job.domain,
        status=job.status,
        progress=_PROGRESS[job.kind](**job.progress),
        results=result.get("results", []),
        errors=result.get("errors", []),
        error=job.error,
        optimization=result.get("optimization"),
        fine_tuning_job=job.id if job.kind == "train" else None,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )
