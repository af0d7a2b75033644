"""Documents of a domain's knowledge store: ingest (admin), list, get, delete (admin), search."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from app.api.cleanjson import CleanJSONRoute
from app.api.deps import AdminDep, JobsDep, KnowledgeDep, NamesDep, SettingsDep
from app.api.document_upload import read_sources
from app.knowledge.base import (
    KnowledgeBase,
    UnknownDomain,
    check_domain_name,
)
from app.knowledge.ingestion import OUT_OF_SPACE, UNAVAILABLE, start_ingest
from app.protocol.documents import (
    DocumentList,
    DocumentPublic,
    IngestResponse,
    SearchHitPublic,
    SearchRequest,
    SearchResponse,
)
from app.protocol.errors import APIError
from app.protocol.jobs import JobPublic, job_public
from app.protocol.profiles import RetrievalOverride, default_profile
from app.serving import rag
from indexers.store import Collection

router = APIRouter(route_class=CleanJSONRoute, prefix="/domains/{domain}", tags=["documents"])


def _domain(domain: str) -> str:
    try:
        return check_domain_name(domain)
    except ValueError as exc:
        raise APIError(400, str(exc), param="domain", code="invalid_domain") from exc


async def _collection(kb: KnowledgeBase, domain: str) -> Collection:
    """Open the domain's collection off the event loop (opening reconciles SQLite and FAISS, or
    asks Milvus)."""
    try:
        return await asyncio.to_thread(kb.collection, _domain(domain))
    except UnknownDomain as exc:
        raise APIError(
            404, f"The domain '{domain}' has no documents.", param="domain", code="domain_not_found"
        ) from exc


@router.post(
    "/documents",
    dependencies=[AdminDep],
    response_model=IngestResponse,
    status_code=201,
    responses={202: {"model": JobPublic}},
)
async def ingest_documents(
    domain: str,
    request: Request,
    kb: KnowledgeDep,
    jobs: JobsDep,
    settings: SettingsDep,
    names: NamesDep,
    wait: Annotated[bool | None, Query(description="Force waiting (true) or a job (false).")] = None,
):
    """Multipart files and/or JSON documents. Small batches answer 201 when done; large ones 202."""
    domain = _domain(domain)
    sources = await read_sources(request, settings.knowledge)
    # 409 when an adapter, soft prompt or the backbone has the name; the job creates the store first
    names.claim_domain(domain)
    size = sum(len(s.data or b"") + len((s.text or "").encode()) for s in sources)
    small = (
        len(sources) <= settings.knowledge.sync_max_documents and size <= settings.knowledge.sync_max_bytes
    )
    job, future = await start_ingest(kb, jobs, domain, sources)
    if not (wait if wait is not None else small):
        return JSONResponse(
            job_public(job).model_dump(), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"}
        )
    await asyncio.shield(future)
    done = await asyncio.to_thread(jobs.get, job.id)
    public = job_public(done)
    if done.status != "succeeded":
        if (done.error or "").startswith(OUT_OF_SPACE):
            raise APIError(507, done.error, code="insufficient_storage")
        if (done.error or "").startswith(UNAVAILABLE):
            raise APIError(503, done.error, code="store_unavailable")
        raise APIError(500, f"Ingestion failed: {done.error}", code="ingest_failed")
    store = (await _collection(kb, domain)).store
    wanted = [r.id for r in public.results if r.status in ("created", "updated")]
    records = await asyncio.to_thread(lambda: [store.get(i) for i in wanted])
    return IngestResponse(
        job_id=job.id,
        domain=domain,
        results=public.results,
        errors=public.errors,
        documents=[DocumentPublic(**vars(r)) for r in records if r],
    )


@router.get("/documents", response_model=DocumentList)
async def list_documents(
    domain: str,
    kb: KnowledgeDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> DocumentList:
    store = (await _collection(kb, domain)).store
    docs, (total, _) = await asyncio.to_thread(lambda: (store.list(offset, limit), store.count()))
    return DocumentList(
        data=[DocumentPublic(**vars(d)) for d in docs], total=total, offset=offset, limit=limit
    )


@router.get("/documents/{document_id:path}", response_model=DocumentPublic)
async def get_document(domain: str, document_id: str, kb: KnowledgeDep) -> DocumentPublic:
    store = (await _collection(kb, domain)).store
    record = await asyncio.to_thread(store.get, document_id)
    if record is None:
        raise APIError(
            404, f"No document '{document_id}' in '{domain}'.", param="document_id", code="document_not_found"
        )
    return DocumentPublic(**vars(record))


@router.delete("/documents/{document_id:path}", dependencies=[AdminDep])
async def delete_document(domain: str, document_id: str, kb: KnowledgeDep) -> dict:
    await _collection(kb, domain)
    deleted = await kb.in_writer(kb.delete_blocking, domain, document_id)
    if not deleted:
        raise APIError(
            404, f"No document '{document_id}' in '{domain}'.", param="document_id", code="document_not_found"
        )
    return {"object": "document.deleted", "id": document_id, "deleted": deleted}


@router.post("/search", response_model=SearchResponse)
async def search(domain: str, body: SearchRequest, kb: KnowledgeDep, domains: NamesDep) -> SearchResponse:
    """Rank the domain's passages; mode, fusion and reranking default to the domain's profile."""
    await _collection(kb, domain)
    profile = domains.profile(domain) or default_profile(domain)
    r = profile.retrieval_for(RetrievalOverride(mode=body.mode, fusion=body.fusion, rerank=body.rerank))
    # the route's own top_k (up to 100), filter and score floor, not the profile's
    r = r.model_copy(update={"top_k": body.top_k, "filter": body.filter, "min_score": body.min_score})
    hits = await rag.search(kb, domain, body.query, r)
    return SearchResponse(data=[SearchHitPublic(**vars(h)) for h in hits])
