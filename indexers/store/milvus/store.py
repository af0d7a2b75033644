"""One domain's documents and chunks in Milvus, with the same reads as the SQLite store.

Milvus has no transactions, so a document is replaced or deleted as a unit by versions:

1. the document record is marked ``pending = V`` (with ``dirty_since``);
2. the new chunks are inserted with ``doc_version = V``;
3. the record is upserted with ``version = V`` — the commit point: from here searches see V;
4. the chunks of the version it replaced are deleted.

Two processes writing one document at once: the last commit wins, and a writer that finds
another version committed after its own removes its own chunks; readers see one whole version at
every moment. In a narrow interleaving a loser cannot tell it lost; its chunks stay invisible and
go with the document's next write once older than ``stale_after_s`` (a version starts with its
creation time, so old ones are found by comparison).

A chunk is visible only while its ``doc_version`` is its document's ``version`` (checked for every
result, ``chunks``), so a crash at any step never shows half a document: before 3 the old version
(or nothing) is what searches see, after it the whole new one. A delete first sets ``version`` to
"" (the document vanishes at once), then removes chunks and record. What a crash leaves behind
(invisible chunks, a record with ``dirty_since``) is removed by ``sweep`` when the collection is
opened or after an ingest batch, once it is older than ``stale_after_s`` — another process may be
writing that very document right now, and its in-flight chunks must not be swept.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from indexers import lexical
from indexers.store.filters import milvus_literal
from indexers.store.milvus.connection import MilvusConnection
from indexers.store.milvus.schema import (
    CHUNK_DOCUMENT_COLUMNS,
    CHUNK_OUTPUT,
    DOCUMENT_COLUMNS,
    chunk_id,
    document_key,
    fit,
)
from indexers.store.sqlite_store import ChunkRow, DocumentRecord, chunk_head, stored_chunk

log = logging.getLogger(__name__)
#: Rows per query page (Milvus caps offset + limit of one query at 16,384).
PAGE = 4096
#: Values per ``in [...]`` list in one expression.
IN_BATCH = 1000
#: How long the languages of a domain's documents are cached (other processes may add some).
LANGUAGES_TTL_S = 10.0


def _record(row: dict[str, Any]) -> DocumentRecord:
    data = {c: row.get(c) for c in DOCUMENT_COLUMNS}
    data["metadata"] = data["metadata"] or {}
    data["warnings"] = data["warnings"] or []
    return DocumentRecord(**data)


def _versions_clause(doc_id: str, versions: list[str]) -> str:
    """The chunks of these (non-empty list of) versions of one document."""
    values = ", ".join(milvus_literal(v) for v in dict.fromkeys(versions))
    return f"(doc_id == {milvus_literal(doc_id)} and doc_version in [{values}])"


def terms(record: DocumentRecord, chunk: ChunkRow, head_weight: float) -> str:
    """What BM25 indexes for a chunk: its stems, and its head's stems ``head_weight`` times (rounded)."""
    body = lexical.analyze(chunk.text, record.language)
    head = lexical.analyze(chunk_head(record, chunk), record.language)
    repeats = max(0, round(head_weight))
    return fit("\n".join([body, *([head] * repeats if head else [])]))


class MilvusStore:
    """The reads and writes of one domain (the SQLite ``DocumentStore``'s interface)."""

    def __init__(
        self,
        conn: MilvusConnection,
        domain: str,
        chunks: str,
        documents: str,
        head_weight: float = 2.0,
        stale_after_s: float = 600.0,
    ) -> None:
        self.conn = conn
        self.domain = domain
        self.chunks_name = chunks
        self.documents_name = documents
        self.head_weight = head_weight
        self.stale_after_s = stale_after_s
        self._in_domain = f"domain == {milvus_literal(domain)}"
        self._languages: tuple[float, list[str | None]] | None = None
        self._lock = threading.Lock()

    # -- helpers ---------------------------------------------------------------------------------
    def _docs(
        self, where: str, fields: list[str] | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        expr = f"{self._in_domain} and ({where})" if where else self._in_domain
        fields = fields or [*DOCUMENT_COLUMNS, "version", "pending", "dirty_since"]
        if limit is not None:
            return self.conn.call(
                "query", self.documents_name, filter=expr, output_fields=fields, limit=limit
            )
        return list(self._iterate(self.documents_name, expr, fields))

    def _pages(self, collection: str, expr: str, fields: list[str]) -> Iterator[list[dict[str, Any]]]:
        """The matching rows, a page at a time (a large domain never sits in memory at once)."""
        it = self.conn.run(
            lambda client: client.query_iterator(
                collection, batch_size=PAGE, filter=expr, output_fields=fields, timeout=self.conn.timeout_s
            )
        )
        try:
            while batch := self.conn.run(lambda _: it.next()):
                yield list(batch)
        finally:
            it.close()

    def _iterate(self, collection: str, expr: str, fields: list[str]) -> Iterator[dict[str, Any]]:
        for page in self._pages(collection, expr, fields):
            yield from page

    def _record_row(self, doc_id: str) -> dict[str, Any] | None:
        return self._record_rows([doc_id]).get(doc_id)

    def _upsert_record(self, record: DocumentRecord, version: str, pending: str, dirty_since: float) -> None:
        self._upsert_records([(record, version, pending, dirty_since)])

    def _upsert_records(self, items: list[tuple[DocumentRecord, str, str, float]]) -> None:
        rows = []
        for record, version, pending, dirty_since in items:
            row = {c: getattr(record, c) for c in DOCUMENT_COLUMNS}
            for column in ("filename", "title", "content_type", "language"):
                row[column] = fit(row[column])
            row.update(
                key=document_key(self.domain, record.id),
                domain=self.domain,
                version=version,
                pending=pending,
                dirty_since=dirty_since,
                unused=[0.0, 0.0],
            )
            rows.append(row)
        for start in range(0, len(rows), 512):
            self.conn.call("upsert", self.documents_name, rows[start : start + 512])

    def _delete_chunks(self, doc_id: str, versions: list[str]) -> None:
        versions = [v for v in versions if v]
        if versions:
            self._delete_where([_versions_clause(doc_id, versions)])

    def get(self, doc_id: str) -> DocumentRecord | None:
        row = self._record_row(doc_id)
        return _record(row) if row and row["version"] else None

    def find_by_hash(self, sha256: str) -> DocumentRecord | None:
        rows = self._docs(f'sha256 == {milvus_literal(sha256)} and version != ""', limit=1)
        return _record(rows[0]) if rows else None

    def list(self, offset: int = 0, limit: int = 50, parent_id: str | None = None) -> list[DocumentRecord]:
        where = 'version != ""'
        if parent_id is not None:
            where += f" and parent_id == {milvus_literal(parent_id)}"
        records = sorted((_record(r) for r in self._docs(where)), key=lambda d: (d.created_at, d.id))
        return records if parent_id is not None else records[offset : offset + limit]

    def count(self) -> tuple[int, int]:
        docs = self.conn.call(
            "query",
            self.documents_name,
            filter=f'{self._in_domain} and version != ""',
            output_fields=["count(*)"],
        )
        chunks = self.conn.call("query", self.chunks_name, filter="", output_fields=["count(*)"])
        return int(docs[0]["count(*)"]), int(chunks[0]["count(*)"])

    def languages(self) -> list[str | None]:
        with self._lock:
            cached = self._languages
        if cached is not None and time.monotonic() - cached[0] < LANGUAGES_TTL_S:
            return cached[1]
        found = {r["language"] for r in self._docs('version != ""', ["language"])}
        languages = sorted(found, key=lambda x: x or "")
        with self._lock:
            self._languages = (time.monotonic(), languages)
        return languages

    def _current_chunks(self, doc_id: str, fields: list[str]) -> list[dict[str, Any]]:
        """The chunks of the document's current version, in order. Reads the record, then that
        version's chunks; when a write switched and removed the version in between, it reads
        again (up to 3 times)."""
        rows: list[dict[str, Any]] = []
        for _ in range(3):
            record = self._record_row(doc_id)
            if not record or not record["version"]:
                return []
            expr = (
                f"doc_id == {milvus_literal(doc_id)} and doc_version == {milvus_literal(record['version'])}"
            )
            rows = list(self._iterate(self.chunks_name, expr, ["ordinal", *fields]))
            if len(rows) == record["chunk_count"]:
                break
        return sorted(rows, key=lambda r: r["ordinal"])

    def chunk_texts(self, doc_id: str) -> list[str]:
        """A document's chunk texts in order."""
        return [r["text"] for r in self._current_chunks(doc_id, ["text"])]

    def export(self, doc_id: str) -> list[ChunkRow]:
        """A document's chunks with their vectors, in order (copying a store without re-embedding)."""
        fields = ["text", "tokens", "vector", "page", "section", "sheet", "row"]
        return [
            stored_chunk(r, np.asarray(r["vector"], dtype=np.float32))
            for r in self._current_chunks(doc_id, fields)
        ]

    def texts(self, limit: int) -> list[str]:
        out: list[str] = []
        for record in self.list(0, 1 << 31):
            out += [t for t in self.chunk_texts(record.id) if t.strip()]
            if len(out) >= limit:
                break
        return out[:limit]

    # -- writes ----------------------------------------------------------------------------------
    def replace(self, record: DocumentRecord, chunks: list[ChunkRow], keep_times: bool = False) -> None:
        """Write a document and its chunks as one unit (see the module's docstring); ``keep_times``
        keeps the record's own created/updated times (a migration copies them)."""
        self.replace_many([(record, chunks)], keep_times)

    def replace_many(
        self, items: list[tuple[DocumentRecord, list[ChunkRow]]], keep_times: bool = False
    ) -> None:
        """Write several documents, each as one unit, with a few calls for the whole batch (one
        Milvus round trip costs more than writing a document's rows). A document that appears twice
        is written in two batches, in order."""
        seen: set[str] = set()
        for i, (record, _) in enumerate(items):
            if record.id in seen:
                self.replace_many(items[:i], keep_times)
                self.replace_many(items[i:], keep_times)
                return
            seen.add(record.id)
        if not items:
            return
        ids = [r.id for r, _ in items]
        now = time.time()
        old = self._record_rows(ids)
        versions, replaced, markers, commits, rows = {}, {}, [], [], []
        for record, chunks in items:
            prior = old.get(record.id)
            prior_version = prior["version"] if prior else ""
            version = versions[record.id] = f"{time.time_ns():x}{secrets.token_hex(4)}"
            # a crashed earlier write's chunks go; a write in flight in another process stays
            stale = prior["pending"] if prior and prior["dirty_since"] < now - self.stale_after_s else ""
            replaced[record.id] = {prior_version, stale}
            if not keep_times:
                record.created_at = prior["created_at"] if prior and prior_version else now
                record.updated_at = now
            record.chunk_count = len(chunks)
            # 1. mark the write (a first write: a record no read shows, version "")
            markers.append(
                (_record(prior) if prior and prior_version else record, prior_version, version, now)
            )
            commits.append((record, version, "", 0.0))
            rows += [self._chunk_row(record, version, c) for c in chunks]
        self._upsert_records(markers)
        # 2. the new chunks, invisible until their records name their versions
        for start in range(0, len(rows), 512):
            self.conn.call("insert", self.chunks_name, rows[start : start + 512])
        # 3. the commit points (what each replaces is read just before: another process may have
        #    committed a version since step 1)
        for doc_id, row in self._record_rows(ids).items():
            replaced[doc_id].add(row["version"])
        self._upsert_records(commits)
        # 4. the replaced versions' chunks go, and any version too old to be a write still in
        #    flight (a racing writer's leftovers)
        clauses = []
        for doc_id, version in versions.items():
            gone = sorted(v for v in replaced[doc_id] if v and v != version)
            if gone:  # a new document replaces nothing (and a delete scans the collection)
                clauses.append(
                    f"({_versions_clause(doc_id, gone)} or {self._old_versions_clause(doc_id, version, now)})"
                )
        self._delete_where(clauses)
        # 5. two processes writing one document: the last commit wins, and a loser removes its own
        after = self._record_rows(ids)
        lost = [
            _versions_clause(d, [v]) for d, v in versions.items() if d in after and after[d]["version"] != v
        ]
        self._delete_where(lost)
        with self._lock:
            self._languages = None

    def _record_rows(self, doc_ids: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(doc_ids), IN_BATCH):
            keys = ", ".join(
                milvus_literal(document_key(self.domain, d)) for d in doc_ids[start : start + IN_BATCH]
            )
            for row in self.conn.call(
                "query",
                self.documents_name,
                filter=f"key in [{keys}]",
                output_fields=[*DOCUMENT_COLUMNS, "version", "pending", "dirty_since"],
            ):
                out[row["id"]] = row
        return out

    def _delete_where(self, clauses: list[str], per_call: int = 64) -> None:
        for start in range(0, len(clauses), per_call):
            self.conn.call("delete", self.chunks_name, filter=" or ".join(clauses[start : start + per_call]))

    def _chunk_row(self, record: DocumentRecord, version: str, c: ChunkRow) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": chunk_id(self.domain, record.id, version, c.ordinal),
            "doc_id": record.id,
            "doc_version": version,
            "ordinal": c.ordinal,
            "text": fit(c.text),
            "page": c.page,
            "section": fit(c.section),
            "sheet": fit(c.sheet),
            "row": c.row,
            "tokens": c.tokens,
            "metadata": record.metadata,
            "terms": terms(record, c, self.head_weight),
            "vector": np.asarray(c.vector, dtype=np.float32).tolist(),
        }
        for column in CHUNK_DOCUMENT_COLUMNS:
            row[f"doc_{column}"] = fit(getattr(record, column))
        return row

    def delete(self, doc_id: str) -> list[str]:
        """Delete a document, its attachments (recursively) and their chunks; the ids deleted."""
        found: list[dict[str, Any]] = []
        frontier = [doc_id]
        while frontier:
            current = frontier.pop()
            row = self._record_row(current)
            if row is None or not row["version"]:
                continue
            found.append(row)
            frontier += [r["id"] for r in self._docs(f"parent_id == {milvus_literal(current)}", ["id"])]
        now = time.time()
        # the commit point of each: its record stops naming a version
        self._upsert_records([(_record(row), "", row["version"], now) for row in found])
        for row in found:
            self._delete_chunks(row["id"], [row["version"], row["pending"]])
            self.conn.call(
                "delete",
                self.documents_name,
                filter=f"key == {milvus_literal(document_key(self.domain, row['id']))}",
            )
        with self._lock:
            self._languages = None
        return [r["id"] for r in found]

    def _old_versions_clause(self, doc_id: str, current: str, now: float) -> str:
        """The document's chunks of versions other than ``current`` older than ``stale_after_s`` (a
        version begins with its creation time in hex nanoseconds: the cut-off is a string
        comparison Milvus evaluates)."""
        cutoff = f"{int((now - self.stale_after_s) * 1e9):x}"
        return (
            f"(doc_id == {milvus_literal(doc_id)} and doc_version != {milvus_literal(current)}"
            f" and doc_version < {milvus_literal(cutoff)})"
        )

    def sweep_versions(self, doc_id: str, current: str, now: float | None = None) -> None:
        """Delete the document's versions too old to be a write in flight, other than ``current``."""
        self._delete_where([self._old_versions_clause(doc_id, current, time.time() if now is None else now)])

    def sweep(self, now: float | None = None) -> int:
        """Finish what crashed writes and deletes left (older than ``stale_after_s``); how many."""
        now = time.time() if now is None else now
        rows = self._docs(f"dirty_since > 0 and dirty_since < {now - self.stale_after_s!r}")
        for row in rows:
            current = row["version"]
            keep = f" and doc_version != {milvus_literal(current)}" if current else ""
            self.conn.call("delete", self.chunks_name, filter=f"doc_id == {milvus_literal(row['id'])}{keep}")
            if current:
                self._upsert_record(_record(row), current, "", 0.0)
            else:
                self.conn.call(
                    "delete",
                    self.documents_name,
                    filter=f"key == {milvus_literal(document_key(self.domain, row['id']))}",
                )
        if rows:
            log.warning("%s: finished %d interrupted document writes", self.domain, len(rows))
        return len(rows)

    # -- chunks ----------------------------------------------------------------------------------
    def visible(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows whose version is their document's current one (the others are mid-write or stale)."""
        versions: dict[str, str] = {}
        ids = sorted({r["doc_id"] for r in rows})
        for start in range(0, len(ids), IN_BATCH):
            keys = ", ".join(
                milvus_literal(document_key(self.domain, d)) for d in ids[start : start + IN_BATCH]
            )
            for r in self.conn.call(
                "query", self.documents_name, filter=f"key in [{keys}]", output_fields=["id", "version"]
            ):
                versions[r["id"]] = r["version"]
        return [r for r in rows if r["doc_version"] and versions.get(r["doc_id"]) == r["doc_version"]]

    def chunks(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        if not ids:
            return {}
        rows: list[dict[str, Any]] = []
        for start in range(0, len(ids), IN_BATCH):
            part = ", ".join(str(int(i)) for i in ids[start : start + IN_BATCH])
            rows += self.conn.call(
                "query", self.chunks_name, filter=f"id in [{part}]", output_fields=list(CHUNK_OUTPUT)
            )
        out = {}
        for r in self.visible(rows):
            out[int(r["id"])] = {
                "chunk_id": int(r["id"]),
                "document_id": r["doc_id"],
                "ordinal": r["ordinal"],
                "text": r["text"],
                "page": r["page"],
                "section": r["section"],
                "sheet": r["sheet"],
                "row": r["row"],
                "filename": r["doc_filename"],
                "title": r["doc_title"],
                "content_type": r["doc_content_type"],
                "language": r["doc_language"],
                "parent_id": r["doc_parent_id"],
                "metadata": r["metadata"] or {},
            }
        return out

    def chunk_ids(self) -> np.ndarray:
        ids = [
            int(r["id"])
            for page in self._pages(self.chunks_name, "", ["id", "doc_id", "doc_version"])
            for r in self.visible(page)
        ]
        return np.array(sorted(ids), dtype=np.int64)

    def vectors(self, ids: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) batches of the visible chunks (all, or the given ids)."""
        wanted = None if ids is None else {int(i) for i in ids}
        for page in self._pages(self.chunks_name, "", ["id", "doc_id", "doc_version", "vector"]):
            rows = [r for r in self.visible(page) if wanted is None or int(r["id"]) in wanted]
            if rows:
                yield (
                    np.array([r["id"] for r in rows], dtype=np.int64),
                    np.array([r["vector"] for r in rows], dtype=np.float32),
                )

    def close(self) -> None:
        """Nothing to close per domain: the connection belongs to the backend."""
