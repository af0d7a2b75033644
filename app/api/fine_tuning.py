"""OpenAI's fine-tuning API: create (admin), list, get, cancel (admin), events.

Jobs train a LoRA adapter or a soft prompt (``method.type``); on success ``fine_tuned_model`` names
it, usable as ``model`` at once.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.api.cleanjson import CleanJSONRoute
from app.api.deps import AdminDep, JobsDep, StateDep
from app.finetune.service import FineTuner
from app.jobs import Job
from app.protocol.errors import APIError
from app.protocol.finetune import (
    FineTuningEvent,
    FineTuningEventList,
    FineTuningJob,
    FineTuningJobCreate,
    FineTuningJobList,
    JobError,
)
from app.protocol.jobs import TrainProgressPublic

router = APIRouter(route_class=CleanJSONRoute, prefix="/fine_tuning/jobs", tags=["fine-tuning"])


def get_tuner(state: StateDep) -> FineTuner:
    if state.tuner is None:
        raise APIError(503, "Fine-tuning is not ready.", code="fine_tuning_unavailable")
    return state.tuner


TunerDep = Annotated[FineTuner, Depends(get_tuner)]


def public(job: Job) -> FineTuningJob:
    info = job.result or {}
    status = "failed" if job.status == "interrupted" else job.status
    error = None
    if job.status == "interrupted":
        error = JobError(
            code="interrupted", message=job.error or "the service stopped before the job finished"
        )
    elif job.status == "failed":
        error = JobError(code=info.get("error_code") or "training_failed", message=job.error or "failed")
    return FineTuningJob(
        id=job.id,
        created_at=int(job.created_at),
        finished_at=info.get("finished_at"),
        model=info["model"],
        fine_tuned_model=info.get("fine_tuned_model"),
        status=status,
        training_file=info["training_file"],
        validation_file=info.get("validation_file"),
        hyperparameters=info["hyperparameters"],
        method=info["method"],
        trained_tokens=info.get("trained_tokens"),
        error=error,
        seed=info["seed"],
        user_provided_suffix=info.get("suffix"),
        metadata=info.get("metadata"),
        progress=TrainProgressPublic(**job.progress),
        conversion=info.get("conversion"),
    )


def _job(jobs, job_id: str) -> Job:
    job = jobs.get(job_id)
    if job is None or job.kind != "train":
        raise APIError(
            404, f"No fine-tuning job '{job_id}'.", param="fine_tuning_job_id", code="job_not_found"
        )
    return job


@router.post("", dependencies=[AdminDep], response_model=FineTuningJob)
async def create_job(body: FineTuningJobCreate, tuner: TunerDep) -> FineTuningJob:
    return public(await tuner.create(body))


@router.get("", response_model=FineTuningJobList)
async def list_jobs(
    jobs: JobsDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> FineTuningJobList:
    found = await asyncio.to_thread(jobs.list, "train", after=after, limit=limit + 1)
    return FineTuningJobList(data=[public(j) for j in found[:limit]], has_more=len(found) > limit)


@router.get("/{fine_tuning_job_id}", response_model=FineTuningJob)
async def get_job(fine_tuning_job_id: str, jobs: JobsDep) -> FineTuningJob:
    return public(await asyncio.to_thread(_job, jobs, fine_tuning_job_id))


@router.post("/{fine_tuning_job_id}/cancel", dependencies=[AdminDep], response_model=FineTuningJob)
async def cancel_job(fine_tuning_job_id: str, jobs: JobsDep, tuner: TunerDep) -> FineTuningJob:
    job = await asyncio.to_thread(_job, jobs, fine_tuning_job_id)
    if job.status not in ("queued", "running"):
        raise APIError(
            400,
            f"The job has already ended ({public(job).status}).",
            param="fine_tuning_job_id",
            code="job_ended",
        )
    await tuner.cancel(job.id)
    return public(await asyncio.to_thread(_job, jobs, job.id))


@router.get("/{fine_tuning_job_id}/events", response_model=FineTuningEventList)
async def list_events(
    fine_tuning_job_id: str,
    jobs: JobsDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> FineTuningEventList:
    job = await asyncio.to_thread(_job, jobs, fine_tuning_job_id)
    seq = None
    if after is not None:
        try:
            seq = int(after.removeprefix("ftevent-"))
        except ValueError as exc:
            raise APIError(400, "'after' must be an event id.", param="after", code="invalid_value") from exc
    rows = await asyncio.to_thread(jobs.events, job.id, after=seq, limit=limit + 1)
    events = [
        FineTuningEvent(
            id=f"ftevent-{r['seq']}",
            created_at=int(r["created_at"]),
            level=r["level"] if r["level"] in ("info", "warn", "error") else "info",
            message=r["message"],
            data=r["data"],
            type="metrics" if r["data"] else "message",
        )
        for r in rows[:limit]
    ]
    return FineTuningEventList(data=events, has_more=len(rows) > limit)
