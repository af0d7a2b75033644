"""``GET /v1/jobs/{id}``: status, progress and per-file results of long-running work."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from app.api.cleanjson import CleanJSONRoute
from app.api.deps import JobsDep
from app.protocol.errors import APIError
from app.protocol.jobs import JobPublic, job_public

router = APIRouter(route_class=CleanJSONRoute, tags=["jobs"])


@router.get("/jobs/{job_id}", response_model=JobPublic)
async def get_job(job_id: str, jobs: JobsDep) -> JobPublic:
    job = await asyncio.to_thread(jobs.get, job_id)
    if job is None:
        raise APIError(404, f"No job '{job_id}'.", param="job_id", code="job_not_found")
    return job_public(job)
