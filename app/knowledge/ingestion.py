"""Ingestion jobs: sources (parsed by the route) stored on the knowledge store's writer thread, with progress."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict
from typing import Any

from app.jobs import Job, JobManager
from app.knowledge.base import KnowledgeBase
from app.protocol.documents import IngestResultPublic
from indexers.durable import is_disk_full
from indexers.ingest import IngestResult, Progress, Source
from indexers.store.errors import StoreUnavailable

log = logging.getLogger(__name__)


#: How a job that failed on a full disk begins its error (the route answers 507 for it).
OUT_OF_SPACE = "insufficient storage"
#: How a job that failed because the store's server was down begins its error (503).
UNAVAILABLE = "store unavailable"


def _public(result: IngestResult) -> dict[str, Any]:
    return IngestResultPublic(**asdict(result)).model_dump()


async def start_ingest(
    kb: KnowledgeBase, jobs: JobManager, domain: str, sources: list[Source]
) -> tuple[Job, asyncio.Future]:
    """Queue an ingestion job on the writer thread; the future resolves when it ends."""
    job = await asyncio.to_thread(
        jobs.create, "ingest", domain, asdict(Progress(documents_total=len(sources)))
    )

    def on_progress(p: Progress) -> None:
        jobs.update(job, progress=asdict(p))

    def work() -> None:
        jobs.update(job, status="running")
        try:
            results = kb.ingest_blocking(domain, sources, on_progress)
        except Exception as exc:  # noqa: BLE001 - recorded on the job
            log.exception("ingestion job %s failed", job.id)
            if is_disk_full(exc):
                error = (
                    f"{OUT_OF_SPACE}: the data dir filled up ({exc}). Documents stored before that "
                    "are kept and searchable; free space and re-submit (stored ones are skipped)."
                )
            elif isinstance(exc, StoreUnavailable):
                error = (
                    f"{UNAVAILABLE}: {exc}. Documents stored before that are kept; re-submit when it "
                    "answers (stored ones are skipped)."
                )
            else:
                error = f"{type(exc).__name__}: {exc}"
            jobs.update(job, status="failed", error=error)
            return
        ok = [_public(r) for r in results if r.status != "error"]
        errors = [_public(r) for r in results if r.status == "error"]
        jobs.update(job, status="succeeded", result={"results": ok, "errors": errors}, force=True)

    future = asyncio.get_running_loop().run_in_executor(kb.writer, work)
    return job, future
