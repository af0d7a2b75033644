"""Ingestion: sources (files or text) → loaded, hashed, chunked, embedded → written per document.

One bad file never stops the batch: it gets an ``error`` result and the rest go in. Embedding is
batched across documents (the embedder is the expensive part); each document is then committed in
its own transaction, so progress is durable document by document. E-mail attachments become child
documents, processed after their parent.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

from indexers.chunking import Chunk, Chunker
from indexers.documents import LoadedDocument, LoaderError, Section, contextual_text
from indexers.language import detect_language
from indexers.loaders import load
from indexers.ocr import NEEDS_OCR
from indexers.store.collection import Collection
from indexers.store.sqlite_store import ChunkRow, DocumentRecord

Status = Literal["created", "updated", "unchanged", "duplicate", "error"]
MAX_ATTACHMENT_DEPTH = 3
_ID_BAD = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class Source:
    """One thing to ingest: raw file bytes, or text."""

    filename: str | None = None
    data: bytes | None = None
    text: str | None = None
    id: str | None = None
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    content_type: str | None = None
    parent_id: str | None = None
    depth: int = 0


@dataclass
class IngestResult:
    id: str | None
    filename: str | None
    status: Status
    document_status: str | None = None
    chunks: int = 0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    duplicate_of: str | None = None
    parent_id: str | None = None


@dataclass
class Progress:
    documents_total: int = 0
    documents_done: int = 0
    chunks_total: int = 0
    chunks_done: int = 0


@dataclass
class _Prepared:
    source: Source
    record: DocumentRecord
    chunks: list[Chunk]
    embed_texts: list[str]
    status: Status
    requested_id: str | None = None


def document_id(source: Source, sha256: str) -> str:
    if source.id:
        return source.id
    if source.filename:
        # the file's path as sent (a folder upload keeps its sub-folders apart), minus traversal
        path = PurePosixPath(source.filename.replace("\\", "/"))
        inner = "/".join(p for p in path.parts if p not in ("", ".", "..", "/")) or "file"
        return f"{source.parent_id}/{inner}" if source.parent_id else inner
    return f"doc-{sha256[:16]}"


def validate_id(doc_id: str) -> str:
    if not doc_id or len(doc_id) > 256 or _ID_BAD.search(doc_id) or doc_id != doc_id.strip():
        raise LoaderError("a document id must be 1-256 printable characters without surrounding spaces")
    return doc_id


class Ingestor:
    """Load, chunk, embed and store sources.

    ``dedupe``: a document whose bytes another document already has is recorded as a duplicate
    of it (the service's behaviour for uploads). Off for vector-store semantics (LangChain), where
    ids are distinct documents whatever their text, and new metadata always replaces the old.
    """

    def __init__(
        self, collection: Collection, chunker: Chunker, embed_batch: int = 128, dedupe: bool = True
    ) -> None:
        self.collection = collection
        self.chunker = chunker
        self.embed_batch = embed_batch
        self.dedupe = dedupe

    def run(
        self, sources: list[Source], on_progress: Callable[[Progress], None] | None = None
    ) -> list[IngestResult]:
        progress = Progress(documents_total=len(sources))
        queue: deque[Source] = deque(sources)
        results: list[IngestResult] = []
        pending: list[_Prepared] = []
        pending_chunks = 0

        def report() -> None:
            if on_progress:
                on_progress(progress)

        def flush() -> None:
            nonlocal pending, pending_chunks
            if not pending:
                return
            texts = [t for p in pending for t in p.embed_texts]
            vectors = self.collection.embedder.embed(texts)
            offset = 0
            batch = []
            for p in pending:
                n = len(p.chunks)
                rows = [
                    ChunkRow(
                        ordinal=c.ordinal,
                        text=c.text,
                        tokens=c.tokens,
                        vector=vectors[offset + i],
                        page=c.location.page,
                        section=c.location.section,
                        sheet=c.location.sheet,
                        row=c.location.row,
                    )
                    for i, c in enumerate(p.chunks)
                ]
                offset += n
                batch.append((p.record, rows))
            # one call for the batch: a Milvus store writes it in a few round trips
            self.collection.write_many(batch)
            for p in pending:
                progress.chunks_done += len(p.chunks)
                progress.documents_done += 1
                results.append(self._result(p))
            pending, pending_chunks = [], 0
            report()

        report()
        while queue:
            source = queue.popleft()
            try:
                prepared, children = self._prepare(source)
            except LoaderError as exc:
                results.append(
                    IngestResult(
                        source.id, source.filename, "error", error=str(exc), parent_id=source.parent_id
                    )
                )
                progress.documents_done += 1
                report()
                continue
            if children:
                # children reference their parent: write the parent (and what is pending) first
                progress.documents_total += len(children)
                queue.extendleft(reversed(children))
            if prepared.status in ("unchanged", "duplicate"):
                results.append(self._result(prepared))
                progress.documents_done += 1
                report()
                continue
            progress.chunks_total += len(prepared.chunks)
            pending.append(prepared)
            pending_chunks += len(prepared.chunks)
            if pending_chunks >= self.embed_batch or children:
                flush()
        flush()
        self.collection.after_batch()
        return results

    def _result(self, p: _Prepared) -> IngestResult:
        r = p.record
        return IngestResult(
            id=p.requested_id or r.id,
            filename=p.source.filename or r.filename,
            status=p.status,
            document_status=r.status,
            chunks=len(p.chunks),
            warnings=list(r.warnings),
            parent_id=r.parent_id,
            duplicate_of=r.id if p.status == "duplicate" else None,
        )

    def _prepare(self, source: Source) -> tuple[_Prepared, list[Source]]:  # noqa: C901 - one linear recipe
        if source.data is not None:
            raw = source.data
            doc = load(raw, source.filename or "document", source.content_type)
        elif source.text is not None:
            raw = source.text.encode("utf-8")
            if not source.text.strip():
                raise LoaderError("the document text is empty")
            doc = LoadedDocument("text/plain", [Section(source.text)])
        else:
            raise LoaderError("a document needs a file or text")
        sha = hashlib.sha256(raw).hexdigest()
        doc_id = validate_id(document_id(source, sha))
        store = self.collection.store
        existing = store.get(doc_id)
        children = (
            [
                Source(
                    filename=a.filename,
                    data=a.data,
                    content_type=a.content_type,
                    parent_id=doc_id,
                    metadata=dict(source.metadata),
                    depth=source.depth + 1,
                )
                for a in doc.attachments
            ]
            if source.depth < MAX_ATTACHMENT_DEPTH
            else []
        )
        if source.depth >= MAX_ATTACHMENT_DEPTH and doc.attachments:
            doc.warnings.append(f"attachments nested deeper than {MAX_ATTACHMENT_DEPTH} levels were skipped")
        same_metadata = existing is not None and (
            all(existing.metadata.get(k) == v for k, v in source.metadata.items())
            if self.dedupe
            else existing.metadata == source.metadata
        )
        if existing is not None and existing.sha256 == sha and same_metadata:
            return _Prepared(source, existing, [], [], "unchanged"), children
        if existing is None and self.dedupe:
            twin = store.find_by_hash(sha)
            if twin is not None and twin.parent_id == source.parent_id:
                return _Prepared(source, twin, [], [], "duplicate", requested_id=doc_id), []
        chunks = self.chunker.split(doc)
        text = doc.text
        has_text = bool(text.strip())
        if has_text:
            status = "ok"
        elif doc.attachments:
            status = "container"  # an archive or an e-mail with only attachments
        elif any(NEEDS_OCR in w for w in doc.warnings):
            status = "needs_ocr"
        else:
            status = "empty"
            doc.warnings.append("no text could be extracted")
        record = DocumentRecord(
            id=doc_id,
            sha256=sha,
            status=status,
            filename=source.filename,
            title=source.title
            or doc.title
            or (PurePosixPath(source.filename).stem if source.filename else None),
            content_type=doc.content_type,
            language=detect_language(text) if has_text else None,
            page_count=doc.page_count,
            parent_id=source.parent_id,
            metadata={**doc.extra_metadata, **source.metadata},
            warnings=doc.warnings,
            size_bytes=len(raw),
        )
        embed_texts = [self._embed_text(record, c) for c in chunks]
        return _Prepared(source, record, chunks, embed_texts, "updated" if existing else "created"), children

    @staticmethod
    def _embed_text(record: DocumentRecord, chunk: Chunk) -> str:
        """What gets embedded: the chunk under its contextual header (title, section, sheet)."""
        return contextual_text(chunk.text, record.title, chunk.location.section, chunk.location.sheet)
