"""SQLite side of a collection: documents, chunks with their vectors, FTS5 for BM25, filters.

It is the source of truth: a document and all its chunks (vectors included) are written in one
transaction with ``synchronous=FULL``, so an acknowledged ingest survives a crash, and the vector
index can always be rebuilt or reconciled from here. Chunk row ids are AUTOINCREMENT, never
reused, so a stale vector id can never point at a new chunk.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from indexers import lexical
from indexers.store.filters import parse

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    filename TEXT,
    title TEXT,
    content_type TEXT,
    language TEXT,
    page_count INTEGER,
    sha256 TEXT NOT NULL,
    parent_id TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    warnings TEXT NOT NULL DEFAULT '[]',
    chunk_count INTEGER NOT NULL DEFAULT 0,
    size_bytes INTEGER,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_sha ON documents(sha256);
CREATE INDEX IF NOT EXISTS documents_parent ON documents(parent_id);
CREATE TABLE IF NOT EXISTS chunks (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id TEXT NOT NULL REFERENCES documents(id),
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    page INTEGER,
    section TEXT,
    sheet TEXT,
    row INTEGER,
    tokens INTEGER,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks(document_id);
"""

#: Full-text index, version 2: per chunk, its stemmed words (``body``) and its document's title,
#: file name, section and sheet (``head``), so BM25 can weight a title hit above a body hit.
#: Filled from Python (stemming is not SQLite's), keyed by the chunk's rowid.
_TERMS = """
CREATE VIRTUAL TABLE IF NOT EXISTS terms USING fts5(
    head, body, tokenize='unicode61 remove_diacritics 2'
);
"""
#: Version 1 indexed raw chunk text through triggers; replaced by ``terms`` on first open.
_V1_FTS = """
DROP TRIGGER IF EXISTS chunks_ai;
DROP TRIGGER IF EXISTS chunks_ad;
DROP TABLE IF EXISTS chunks_fts;
"""
SCHEMA_VERSION = 2
log = logging.getLogger(__name__)

_OPS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


@dataclass
class DocumentRecord:
    id: str
    sha256: str
    status: str
    filename: str | None = None
    title: str | None = None
    content_type: str | None = None
    language: str | None = None
    page_count: int | None = None
    parent_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    chunk_count: int = 0
    size_bytes: int | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass
class ChunkRow:
    ordinal: int
    text: str
    tokens: int
    vector: np.ndarray
    page: int | None = None
    section: str | None = None
    sheet: str | None = None
    row: int | None = None


def stored_chunk(row: Any, vector: np.ndarray) -> ChunkRow:
    """A chunk as a store returns it (a SQLite row or a Milvus entity), with its decoded vector."""
    return ChunkRow(
        ordinal=row["ordinal"],
        text=row["text"],
        tokens=row["tokens"] or 0,
        vector=vector,
        page=row["page"],
        section=row["section"],
        sheet=row["sheet"],
        row=row["row"],
    )


def _doc(row: sqlite3.Row) -> DocumentRecord:
    data = dict(row)
    data["metadata"] = json.loads(data["metadata"])
    data["warnings"] = json.loads(data["warnings"])
    return DocumentRecord(**data)


def _sql(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def compile_filter(flt: dict[str, Any] | None) -> tuple[str, list[Any]]:
    """The filter (``indexers.store.filters``) as a SQL condition over ``d`` and ``c``."""
    conditions = parse(flt)
    if not conditions:
        return "1", []
    clauses: list[str] = []
    params: list[Any] = []
    for cond in conditions:
        prefix: list[Any] = []
        if cond.where == "document":
            column = f"d.{cond.key}"
        elif cond.where == "chunk":
            column = f"c.{cond.key}"
        else:
            column = "json_extract(d.metadata, ?)"
            prefix = [f'$."{cond.key}"']
        if cond.op in ("$in", "$nin"):
            marks = ",".join("?" * len(cond.value))
            clauses.append(f"{column} {'NOT ' if cond.op == '$nin' else ''}IN ({marks})")
            params += prefix + [_sql(v) for v in cond.value]
        elif cond.value is None and cond.op in ("$eq", "$ne"):
            clauses.append(f"{column} IS {'NOT ' if cond.op == '$ne' else ''}NULL")
            params += prefix
        else:
            clauses.append(f"{column} {_OPS[cond.op]} ?")
            params += prefix + [_sql(cond.value)]
    return " AND ".join(clauses), params


def fts_query(terms: list[str]) -> str | None:
    """Terms as an FTS5 OR-query of quoted strings (no FTS syntax from users reaches SQLite)."""
    if not terms:
        return None
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def chunk_head(record: DocumentRecord, chunk: ChunkRow) -> str:
    """What the ``head`` field indexes: the document's title and file name, the chunk's section and sheet.

    The file name is split into words ("lease_2023-madrid.pdf" → lease 2023 madrid pdf); it is left
    out when it only repeats the title (a title defaults to the file's stem).
    """
    parts = [record.title or ""]
    if record.filename:
        name = PurePosixPath(record.filename.replace("\\", "/")).name
        if lexical.words(PurePosixPath(name).stem) != lexical.words(record.title or ""):
            parts.append(name)
    parts += [chunk.section or "", chunk.sheet or ""]
    return "\n".join(p for p in parts if p)


class DocumentStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._languages: list[str | None] | None = None
        self._migrate()

    def _migrate(self) -> None:
        """Bring an older store up to ``SCHEMA_VERSION`` (one transaction; a crash leaves v1 intact)."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version >= SCHEMA_VERSION:
            self._db.executescript(_TERMS)
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if self._db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                self._db.execute("COMMIT")  # another process migrated it while this one waited
                return
            # statement by statement: executescript would commit the open transaction first
            self._db.execute("DROP TABLE IF EXISTS terms")
            self._db.execute(_TERMS)
            rows = self._db.execute(
                "SELECT c.rowid, c.text, c.section, c.sheet, d.title, d.filename, d.language"
                " FROM chunks c JOIN documents d ON d.id = c.document_id"
            ).fetchall()
            if rows:
                log.warning(
                    "%s: indexing %d chunks for per-language BM25 (store schema %d)",
                    self.path,
                    len(rows),
                    SCHEMA_VERSION,
                )
            for r in rows:
                record = DocumentRecord(id="", sha256="", status="", title=r["title"], filename=r["filename"])
                chunk = ChunkRow(0, r["text"], 0, np.zeros(0), section=r["section"], sheet=r["sheet"])
                self._index_terms(r["rowid"], record, chunk, r["language"])
            for statement in _V1_FTS.strip().split("\n"):
                self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _index_terms(self, rowid: int, record: DocumentRecord, chunk: ChunkRow, language: str | None) -> None:
        self._db.execute(
            "INSERT INTO terms (rowid, head, body) VALUES (?, ?, ?)",
            (
                rowid,
                lexical.analyze(chunk_head(record, chunk), language),
                lexical.analyze(chunk.text, language),
            ),
        )

    def languages(self) -> list[str | None]:
        """The languages of the collection's documents (a query is stemmed in each)."""
        with self._lock:
            if self._languages is None:
                rows = self._db.execute("SELECT DISTINCT language FROM documents").fetchall()
                self._languages = sorted((r[0] for r in rows), key=lambda x: x or "")
            return self._languages

    def _rollback(self) -> None:
        """Undo the open transaction, if SQLite has not already (it rolls back by itself on a full
        disk, and a second ROLLBACK would hide that error behind "no transaction is active")."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- documents -------------------------------------------------------------------------------
    def get(self, doc_id: str) -> DocumentRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM documents WHERE id = ?", (doc_id,)).fetchone()
        return _doc(row) if row else None

    def chunk_texts(self, doc_id: str) -> list[str]:
        """A document's chunk texts in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT text FROM chunks WHERE document_id = ? ORDER BY ordinal", (doc_id,)
            ).fetchall()
        return [r[0] for r in rows]

    def export(self, doc_id: str) -> list[ChunkRow]:
        """A document's chunks with their vectors, in order (copying a store without re-embedding)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT ordinal, text, tokens, vector, page, section, sheet, row FROM chunks"
                " WHERE document_id = ? ORDER BY ordinal",
                (doc_id,),
            ).fetchall()
        return [stored_chunk(r, np.frombuffer(r["vector"], dtype=np.float32)) for r in rows]

    def texts(self, limit: int) -> list[str]:
        """Up to ``limit`` non-blank chunk texts in ingestion order (training on a domain's documents)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT text FROM chunks WHERE trim(text) != '' ORDER BY rowid LIMIT ?", (limit,)
            ).fetchall()
        return [r[0] for r in rows]

    def find_by_hash(self, sha256: str) -> DocumentRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM documents WHERE sha256 = ? LIMIT 1", (sha256,)).fetchone()
        return _doc(row) if row else None

    def list(self, offset: int = 0, limit: int = 50, parent_id: str | None = None) -> list[DocumentRecord]:
        with self._lock:
            if parent_id is None:
                rows = self._db.execute(
                    "SELECT * FROM documents ORDER BY created_at, id LIMIT ? OFFSET ?", (limit, offset)
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM documents WHERE parent_id = ? ORDER BY created_at, id", (parent_id,)
                ).fetchall()
        return [_doc(r) for r in rows]

    def count(self) -> tuple[int, int]:
        with self._lock:
            docs = self._db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
            chunks = self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return docs, chunks

    def replace(
        self, record: DocumentRecord, chunks: list[ChunkRow], keep_times: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Write a document and its chunks atomically, replacing any previous version.

        ``keep_times``: the record's own created/updated times are kept (a migration copies them).
        Returns (new chunk row ids, removed chunk row ids) for the vector index.
        """
        now = time.time()
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                old = db.execute("SELECT created_at FROM documents WHERE id = ?", (record.id,)).fetchone()
                removed = [
                    r[0] for r in db.execute("SELECT rowid FROM chunks WHERE document_id = ?", (record.id,))
                ]
                self._drop_terms(removed)
                db.execute("DELETE FROM chunks WHERE document_id = ?", (record.id,))
                if not keep_times:
                    record.created_at = old[0] if old else now
                    record.updated_at = now
                record.chunk_count = len(chunks)
                db.execute(
                    "INSERT OR REPLACE INTO documents (id, filename, title, content_type, language, page_count,"
                    " sha256, parent_id, metadata, status, warnings, chunk_count, size_bytes, created_at, updated_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        record.id,
                        record.filename,
                        record.title,
                        record.content_type,
                        record.language,
                        record.page_count,
                        record.sha256,
                        record.parent_id,
                        json.dumps(record.metadata, sort_keys=True, ensure_ascii=False),
                        record.status,
                        json.dumps(record.warnings, ensure_ascii=False),
                        record.chunk_count,
                        record.size_bytes,
                        record.created_at,
                        record.updated_at,
                    ),
                )
                new_ids = []
                for c in chunks:
                    cur = db.execute(
                        "INSERT INTO chunks (document_id, ordinal, text, page, section, sheet, row, tokens, vector)"
                        " VALUES (?,?,?,?,?,?,?,?,?)",
                        (
                            record.id,
                            c.ordinal,
                            c.text,
                            c.page,
                            c.section,
                            c.sheet,
                            c.row,
                            c.tokens,
                            np.ascontiguousarray(c.vector, dtype=np.float32).tobytes(),
                        ),
                    )
                    new_ids.append(cur.lastrowid)
                    self._index_terms(cur.lastrowid, record, c, record.language)
                db.execute("COMMIT")
                self._languages = None
            except BaseException:
                self._rollback()
                raise
        return np.array(new_ids, dtype=np.int64), np.array(removed, dtype=np.int64)

    def delete(self, doc_id: str) -> tuple[list[str], np.ndarray]:
        """Delete a document, its attachments (recursively) and their chunks, atomically."""
        with self._lock:
            db = self._db
            ids, frontier = [], [doc_id]
            while frontier:
                current = frontier.pop()
                if db.execute("SELECT 1 FROM documents WHERE id = ?", (current,)).fetchone():
                    ids.append(current)
                    frontier += [
                        r[0] for r in db.execute("SELECT id FROM documents WHERE parent_id = ?", (current,))
                    ]
            if not ids:
                return [], np.zeros(0, np.int64)
            marks = ",".join("?" * len(ids))
            db.execute("BEGIN IMMEDIATE")
            try:
                removed = [
                    r[0] for r in db.execute(f"SELECT rowid FROM chunks WHERE document_id IN ({marks})", ids)
                ]
                self._drop_terms(removed)
                db.execute(f"DELETE FROM chunks WHERE document_id IN ({marks})", ids)
                db.execute(f"DELETE FROM documents WHERE id IN ({marks})", ids)
                db.execute("COMMIT")
                self._languages = None
            except BaseException:
                self._rollback()
                raise
        return ids, np.array(removed, dtype=np.int64)

    def _drop_terms(self, rowids: list[int]) -> None:
        for start in range(0, len(rowids), 900):
            part = rowids[start : start + 900]
            self._db.execute(f"DELETE FROM terms WHERE rowid IN ({','.join('?' * len(part))})", part)

    # -- chunks and vectors ----------------------------------------------------------------------
    def chunk_ids(self) -> np.ndarray:
        with self._lock:
            rows = self._db.execute("SELECT rowid FROM chunks").fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def vectors(
        self, ids: np.ndarray | None = None, batch: int = 4096
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (ids, vectors) batches, for all chunks or for the given row ids."""
        with self._lock:
            if ids is None:
                rows = self._db.execute("SELECT rowid, vector FROM chunks ORDER BY rowid").fetchall()
            else:
                rows = []
                as_list = [int(i) for i in ids]
                for start in range(0, len(as_list), 900):
                    part = as_list[start : start + 900]
                    rows += self._db.execute(
                        f"SELECT rowid, vector FROM chunks WHERE rowid IN ({','.join('?' * len(part))})", part
                    ).fetchall()
        for start in range(0, len(rows), batch):
            part = rows[start : start + batch]
            yield (
                np.array([r[0] for r in part], dtype=np.int64),
                np.stack([np.frombuffer(r[1], dtype=np.float32) for r in part]),
            )

    def filtered_ids(self, flt: dict[str, Any]) -> np.ndarray:
        where, params = compile_filter(flt)
        with self._lock:
            rows = self._db.execute(
                f"SELECT c.rowid FROM chunks c JOIN documents d ON d.id = c.document_id WHERE {where}", params
            ).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def bm25(
        self, query: str, k: int, flt: dict[str, Any] | None = None, head_weight: float = 2.0
    ) -> list[tuple[int, float]]:
        """Top ``k`` chunks by BM25 over stemmed words; a word in ``head`` counts ``head_weight`` times."""
        match = fts_query(lexical.query_terms(query, self.languages()))
        if match is None:
            return []
        where, params = compile_filter(flt)
        with self._lock:
            rows = self._db.execute(
                "SELECT c.rowid, -bm25(terms, ?, 1.0) AS score FROM terms"
                " JOIN chunks c ON c.rowid = terms.rowid JOIN documents d ON d.id = c.document_id"
                f" WHERE terms MATCH ? AND {where} ORDER BY score DESC LIMIT ?",
                [head_weight, match, *params, k],
            ).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]

    def chunks(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._db.execute(
                "SELECT c.rowid AS chunk_id, c.document_id, c.ordinal, c.text, c.page, c.section, c.sheet, c.row,"
                " d.filename, d.title, d.content_type, d.language, d.parent_id, d.metadata"
                f" FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.rowid IN ({marks})",
                ids,
            ).fetchall()
        out = {}
        for r in rows:
            item = dict(r)
            item["metadata"] = json.loads(item["metadata"])
            out[int(r["chunk_id"])] = item
        return out
