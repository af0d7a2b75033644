"""Domain profiles: list, get, create-or-replace (admin), delete (admin), optimize (admin, job)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.cleanjson import CleanJSONRoute
from app.api.deps import (
    AdminDep,
    CatalogDep,
    EngineDep,
    JobsDep,
    KnowledgeDep,
    NamesDep,
    RunnerDep,
    SettingsDep,
)
from app.catalog import Catalog
from app.jobs import JobManager, JobRunner
from app.knowledge.base import KnowledgeBase, check_domain_name
from app.knowledge.tuning import UnknownDocuments, check_relevant, tune_blocking, tuned_retrieval
from app.protocol.domains import DomainList, DomainPublic, KnowledgeStats, OptimizeRequest
from app.protocol.errors import APIError
from app.protocol.jobs import JobPublic, job_public
from app.protocol.profiles import DomainProfile, DomainProfileIn
from app.serving.optimize import Optimizer, describe_engine_failure
from indexers.store.errors import StoreUnavailable

log = logging.getLogger(__name__)
router = APIRouter(route_class=CleanJSONRoute, prefix="/domains", tags=["domains"])


def _name(name: str) -> str:
    try:
        return check_domain_name(name)
    except ValueError as exc:
        raise APIError(400, str(exc), param="name", code="invalid_domain") from exc


def _public(domains: Catalog, name: str, profile: DomainProfile | None = None) -> DomainPublic:
    """A domain as listed; ``profile``: the one a write just stored (not whatever is there now)."""
    profile = profile or domains.profile(name)
    if profile is None:
        raise APIError(404, f"No domain '{name}'.", param="name", code="domain_not_found")
    stats = None
    if domains.knowledge.has(name):
        try:
            docs, chunks = domains.knowledge.collection(name).store.count()
            stats = KnowledgeStats(documents=docs, chunks=chunks)
        except StoreUnavailable:
            pass  # the profile is still listed; its store's counts are unknown while Milvus is down
    return DomainPublic(**profile.model_dump(), configured=profile.version > 0, knowledge=stats)


@router.get("", response_model=DomainList)
async def list_domains(domains: NamesDep) -> DomainList:
    def build() -> DomainList:
        return DomainList(
            data=[_public(domains, n) for n in domains.domain_names()],
            warnings=list(domains.profiles.warnings.values()),
        )

    return await asyncio.to_thread(build)


@router.get("/{name}", response_model=DomainPublic)
async def get_domain(name: str, domains: NamesDep) -> DomainPublic:
    return await asyncio.to_thread(_public, domains, _name(name))


@router.put(
    "/{name}",
    dependencies=[AdminDep],
    response_model=DomainPublic,
    responses={201: {"model": DomainPublic, "description": "Created"}},
)
async def put_domain(
    name: str, body: DomainProfileIn, domains: NamesDep, settings: SettingsDep
) -> JSONResponse:
    """Create or replace a profile; the version grows on every replace.

    The catalog checks the name (no backbone, adapter or soft prompt of that name) and that what
    the profile names exists, under its lock, together with the write.
    """
    name = _name(name)
    if body.retrieval.rerank and not settings.knowledge.reranker:
        raise APIError(
            400,
            "retrieval.rerank needs a reranker: set TAILOR_KNOWLEDGE__RERANKER to a sentence-transformers "
            "cross-encoder",
            param="retrieval.rerank",
            code="no_reranker",
        )
    profile, created = await asyncio.to_thread(domains.put_domain, name, body)
    public = await asyncio.to_thread(_public, domains, name, profile)
    return JSONResponse(public.model_dump(mode="json"), status_code=201 if created else 200)


@router.delete("/{name}", dependencies=[AdminDep])
async def delete_domain(name: str, domains: NamesDep, knowledge: KnowledgeDep) -> dict:
    """Remove the domain: its profile and its knowledge store (documents, chunks, vectors)."""
    name = _name(name)
    had_profile = await asyncio.to_thread(domains.delete_profile, name)
    had_store = await knowledge.in_writer(knowledge.drop_blocking, name)
    if not (had_profile or had_store):
        raise APIError(404, f"No domain '{name}'.", param="name", code="domain_not_found")
    return {"object": "domain.deleted", "id": name, "deleted": True, "documents_deleted": had_store}


@router.post("/{name}/optimize", dependencies=[AdminDep], status_code=202, response_model=JobPublic)
async def optimize(
    name: str,
    body: OptimizeRequest,
    domains: NamesDep,
    jobs: JobsDep,
    runner: RunnerDep,
    engine: EngineDep,
    catalog: CatalogDep,
    knowledge: KnowledgeDep,
    settings: SettingsDep,
) -> JobPublic:
    """Score candidate templates on held-out examples as a job; `apply` stores the winner.

    With ``queries`` instead: choose the domain's retrieval settings from labelled queries.
    """
    name = _name(name)
    if domains.profile(name) is None:
        raise APIError(404, f"No domain '{name}'.", param="name", code="domain_not_found")
    if body.queries is not None:
        return await _tune_retrieval(name, body, domains, jobs, runner, knowledge)
    assert body.candidates is not None
    try:
        for t in body.candidates:
            DomainProfileIn(template=t)
    except ValueError as exc:
        raise APIError(
            422, f"Invalid candidate template: {exc}", param="candidates", code="invalid_template"
        ) from exc
    lease = catalog.acquire(name)  # the domain's adapter and soft prompt stay loaded for the job
    target = lease.target
    try:
        job = jobs.create("optimize", name, {"examples_total": 0, "examples_done": 0})
    except BaseException:
        lease.release()
        raise

    def progress(done: int, total: int) -> None:
        jobs.update(job, progress={"examples_total": total, "examples_done": done})

    async def run() -> dict:
        with lease:
            return await optimize_templates()

    async def optimize_templates() -> dict:
        result = await Optimizer(engine, knowledge, settings, target, body, progress).run()
        if body.apply:
            current = domains.profiles.get(name) or target.profile
            update = DomainProfileIn(
                **{
                    **current.model_dump(include=set(DomainProfileIn.model_fields)),
                    "template": body.candidates[result.best],
                }
            )
            stored, _ = await asyncio.to_thread(domains.put_domain, name, update)
            result.applied, result.profile_version = True, stored.version
        return {"optimization": result.model_dump()}

    runner.start(job, run, describe_engine_failure)
    return job_public(job)


async def _tune_retrieval(
    name: str,
    body: OptimizeRequest,
    domains: Catalog,
    jobs: JobManager,
    runner: JobRunner,
    knowledge: KnowledgeBase,
) -> JobPublic:
    """Retrieval tuning as a job: candidates are computed per query (progress), then compared."""
    assert body.queries is not None
    if not knowledge.has(name):
        raise APIError(
            400, f"Domain '{name}' has no documents to tune retrieval on.", param="name", code="no_documents"
        )
    try:
        await knowledge.in_writer(check_relevant, knowledge, name, body.queries)
    except UnknownDocuments as exc:
        raise APIError(400, str(exc), param="queries", code="unknown_document") from exc
    job = jobs.create("optimize", name, {"examples_total": len(body.queries), "examples_done": 0})

    def progress(done: int, total: int) -> None:
        jobs.update(job, progress={"examples_total": total, "examples_done": done})

    async def run() -> dict:
        profile = domains.profile(name)
        assert profile is not None
        choice = await asyncio.to_thread(
            tune_blocking, knowledge, name, body.queries, profile.retrieval, body.holdout, body.seed, progress
        )
        result = {"kind": "retrieval", "metric": "mrr@10", **choice.public(), "applied": False}
        result["current"] = result.pop("default")
        no_worse = choice.best_heldout.mrr >= choice.default_heldout.mrr
        if body.apply and no_worse:
            current = domains.profiles.get(name) or profile
            update = DomainProfileIn(
                **{
                    **current.model_dump(include=set(DomainProfileIn.model_fields) - {"retrieval"}),
                    "retrieval": tuned_retrieval(current.retrieval, choice),
                }
            )
            stored, _ = await asyncio.to_thread(domains.put_domain, name, update)
            result.update(
                applied=True, profile_version=stored.version, retrieval=stored.retrieval.model_dump()
            )
        elif body.apply:
            result["not_applied_because"] = (
                "the tuned settings lose to the current ones on the held-out queries"
            )
        return {"optimization": result}

    runner.start(job, run, describe_engine_failure)
    return job_public(job)
