"""Domain profiles: list, get, create-or-replace (admin), delete (admin), optimize (admin, job)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.cleanjson import CleanJSONRoute
from app.api.deps import AdminDep, DomainsDep, EngineDep, JobsDep, KnowledgeDep, SettingsDep
from app.domains.optimize import Optimizer
from app.domains.profile import DomainProfileIn
from app.domains.registry import DomainRegistry
from app.knowledge.base import check_domain_name
from app.knowledge.ingestion import job_public
from app.protocol.documents import JobPublic
from app.protocol.domains import DomainList, DomainPublic, KnowledgeStats, OptimizeRequest
from app.protocol.errors import APIError

log = logging.getLogger(__name__)
router = APIRouter(route_class=CleanJSONRoute, prefix="/domains", tags=["domains"])
_running: set[asyncio.Task] = set()  # keep optimization tasks referenced until they finish


def _name(name: str) -> str:
    try:
        return check_domain_name(name)
    except ValueError as exc:
        raise APIError(400, str(exc), param="name", code="invalid_domain") from exc


def _public(domains: DomainRegistry, name: str) -> DomainPublic:
    profile = domains.get(name)
    if profile is None:
        raise APIError(404, f"No domain '{name}'.", param="name", code="domain_not_found")
    stats = None
    if domains.knowledge.has(name):
        docs, chunks = domains.knowledge.collection(name).store.count()
        stats = KnowledgeStats(documents=docs, chunks=chunks)
    return DomainPublic(
        **profile.model_dump(), configured=domains.profiles.get(name) is not None, knowledge=stats
    )


@router.get("", response_model=DomainList)
async def list_domains(domains: DomainsDep) -> DomainList:
    def build() -> DomainList:
        return DomainList(
            data=[_public(domains, n) for n in domains.names()],
            warnings=list(domains.profiles.warnings.values()),
        )

    return await asyncio.to_thread(build)


@router.get("/{name}", response_model=DomainPublic)
async def get_domain(name: str, domains: DomainsDep) -> DomainPublic:
    return await asyncio.to_thread(_public, domains, _name(name))


@router.put(
    "/{name}",
    dependencies=[AdminDep],
    response_model=DomainPublic,
    responses={201: {"model": DomainPublic, "description": "Created"}},
)
async def put_domain(
    name: str, body: DomainProfileIn, domains: DomainsDep, settings: SettingsDep
) -> JSONResponse:
    """Create or replace a profile; the version grows on every replace."""
    name = _name(name)
    if name == settings.served_model_name:
        raise APIError(409, f"'{name}' is the backbone's name.", param="name", code="name_taken")
    domains.check_references(body)
    _, created = await asyncio.to_thread(domains.profiles.put, name, body)
    public = await asyncio.to_thread(_public, domains, name)
    return JSONResponse(public.model_dump(mode="json"), status_code=201 if created else 200)


@router.delete("/{name}", dependencies=[AdminDep])
async def delete_domain(name: str, domains: DomainsDep, knowledge: KnowledgeDep) -> dict:
    """Remove the domain: its profile and its knowledge store (documents, chunks, vectors)."""
    name = _name(name)
    had_profile = await asyncio.to_thread(domains.profiles.delete, name)
    had_store = await knowledge.in_writer(knowledge.drop_blocking, name)
    if not (had_profile or had_store):
        raise APIError(404, f"No domain '{name}'.", param="name", code="domain_not_found")
    return {"object": "domain.deleted", "id": name, "deleted": True, "documents_deleted": had_store}


@router.post("/{name}/optimize", dependencies=[AdminDep], status_code=202, response_model=JobPublic)
async def optimize(
    name: str,
    body: OptimizeRequest,
    domains: DomainsDep,
    jobs: JobsDep,
    engine: EngineDep,
    knowledge: KnowledgeDep,
    settings: SettingsDep,
) -> JobPublic:
    """Score candidate templates on held-out examples as a job; `apply` stores the winner."""
    name = _name(name)
    profile = domains.get(name)
    if profile is None:
        raise APIError(404, f"No domain '{name}'.", param="name", code="domain_not_found")
    try:
        for t in body.candidates:
            DomainProfileIn(template=t)
    except ValueError as exc:
        raise APIError(
            422, f"Invalid candidate template: {exc}", param="candidates", code="invalid_template"
        ) from exc
    job = jobs.create(
        "optimize", name, {"documents_total": 0, "documents_done": 0, "chunks_total": 0, "chunks_done": 0}
    )

    def progress(done: int, total: int) -> None:
        # progress is reported in the job's generic counters: examples scored / to score
        jobs.update(
            job,
            progress={"documents_total": total, "documents_done": done, "chunks_total": 0, "chunks_done": 0},
        )

    async def run() -> None:
        jobs.update(job, status="running")
        try:
            result = await Optimizer(engine, knowledge, settings, profile, body, progress).run()
            if body.apply:
                current = domains.profiles.get(name) or profile
                update = DomainProfileIn(
                    **{
                        **current.model_dump(include=set(DomainProfileIn.model_fields)),
                        "template": body.candidates[result.best],
                    }
                )
                stored, _ = await asyncio.to_thread(domains.profiles.put, name, update)
                result.applied, result.profile_version = True, stored.version
            jobs.update(job, status="succeeded", result={"optimization": result.model_dump()}, force=True)
        except Exception as exc:  # noqa: BLE001 - recorded on the job
            log.exception("optimization job %s failed", job.id)
            jobs.update(job, status="failed", error=f"{type(exc).__name__}: {exc}")

    task = asyncio.create_task(run())
    _running.add(task)
    task.add_done_callback(_running.discard)
    return job_public(job)
