"""Copy knowledge stores between backends (FAISS/SQLite ⇄ Milvus) without re-embedding.

Each document is read with its chunks and their vectors from the source and written to the
target through the target's own ``write`` (so the target's crash-safety holds: a copy interrupted
halfway leaves whole documents only). Records keep their ids, metadata and times. A document the
target already has with the same content hash and chunk count is skipped, so running the copy
again after an interruption finishes it. Each domain ends with a verification: documents and
chunks counted on both sides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from app.config import KnowledgeSettings
from app.knowledge.base import KnowledgeBase, make_backend

Backend = Literal["faiss", "milvus"]
#: Documents written per call to the target (each still switched as a unit).
BATCH = 64


@dataclass
class DomainReport:
    domain: str
    copied: int = 0
    skipped: int = 0
    chunks: int = 0
    source_counts: tuple[int, int] = (0, 0)
    target_counts: tuple[int, int] = (0, 0)
    errors: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return not self.errors and self.source_counts == self.target_counts


def migrate(
    root: Path,
    embedder_path: str,
    settings: KnowledgeSettings,
    to: Backend,
    domains: list[str] | None = None,
    on_domain: Callable[[str, int], None] | None = None,
    on_document: Callable[[], None] | None = None,
) -> list[DomainReport]:
    """Copy ``domains`` (default: all the source has) into backend ``to``; a report per domain."""
    source_backend: Backend = "milvus" if to == "faiss" else "faiss"
    source = KnowledgeBase(root, embedder_path, settings.model_copy(update={"backend": source_backend}))
    target = KnowledgeBase(root, embedder_path, settings.model_copy(update={"backend": to}))
    # one embedder for both sides: only its dimension and name are needed, never its forward pass
    target._embedder = source.embedder
    reports = []
    try:
        for domain in domains or source.domains():
            reports.append(_copy(source, target, domain, on_domain, on_document))
    finally:
        source.close()
        target.close()
    return reports


def _copy(
    source: KnowledgeBase,
    target: KnowledgeBase,
    domain: str,
    on_domain: Callable[[str, int], None] | None,
    on_document: Callable[[], None] | None,
) -> DomainReport:
    report = DomainReport(domain)
    src = source.collection(domain)
    records = src.store.list(0, 1 << 62)
    if on_domain:
        on_domain(domain, len(records))
    dst = target.collection(domain, create=True)
    for start in range(0, len(records), BATCH):
        part = records[start : start + BATCH]
        batch = []
        for record in part:
            have = dst.store.get(record.id)
            if have is not None and have.sha256 == record.sha256 and have.chunk_count == record.chunk_count:
                report.skipped += 1
            else:
                batch.append((record, src.store.export(record.id)))
        try:
            dst.write_many(batch, keep_times=True)
            report.copied += len(batch)
            report.chunks += sum(len(c) for _, c in batch)
        except Exception as exc:  # noqa: BLE001 - one failed batch is reported, the rest go on
            report.errors.append(f"{', '.join(r.id for r, _ in batch[:3])}…: {type(exc).__name__}: {exc}")
        if on_document:
            for _ in part:
                on_document()
    dst.after_batch()
    report.source_counts = src.store.count()
    report.target_counts = dst.store.count()
    return report


def describe(settings: KnowledgeSettings, backend: Backend, root: Path) -> dict[str, Any]:
    """Where a backend keeps its data, for the command's first line."""
    if backend == "faiss":
        return {"backend": "faiss", "where": str(root)}
    conn = make_backend(root, settings.model_copy(update={"backend": "milvus"})).conn
    return {"backend": "milvus", "where": conn.shown}
