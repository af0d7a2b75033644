"""A collection: one domain's documents — SQLite store + vector index + search.

Writes go to SQLite first (the commit point), then to the in-memory vector index; the index file
is saved after each batch and on close. On open, the index is reconciled with SQLite (vectors
missing from the index are added from SQLite, ids SQLite no longer has are removed), so after a
crash they never disagree.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from indexers.embedding import Embedder
from indexers.rerank import Reranker, contextual_text
from indexers.store.fusion import Fusion, fuse
from indexers.store.sqlite_store import ChunkRow, DocumentRecord, DocumentStore
from indexers.store.vector_index import FaissIndex, VectorIndex, make_index

log = logging.getLogger(__name__)

SearchMode = Literal["dense", "bm25", "hybrid"]


@dataclass(frozen=True)
class CollectionSettings:
    index_kind: Literal["auto", "flat", "ivf"] = "auto"
    #: With ``auto``, switch from exact to IVF search past this many chunks.
    ivf_threshold: int = 50_000
    nprobe: int = 16
    #: A filtered dense search over at most this many chunks is scored exactly from SQLite vectors.
    exact_filter_limit: int = 20_000
    #: How the hybrid mode combines its two rankings, unless a search names its own.
    fusion: Fusion = Fusion()
    #: BM25 counts a word in a chunk's head (title, file name, section, sheet) this many times.
    head_weight: float = 2.0
    #: Fused candidates a reranker re-scores (at least ``top_k``).
    rerank_depth: int = 20


@dataclass
class SearchHit:
    chunk_id: int
    document_id: str
    text: str
    score: float
    filename: str | None = None
    title: str | None = None
    content_type: str | None = None
    language: str | None = None
    parent_id: str | None = None
    location: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReconcileReport:
    added: int = 0
    removed: int = 0
    rebuilt: bool = False


class SearchMixin:
    """Search over any store: the backend gives candidates and rows, this ranks them.

    A backend provides ``candidates`` (the dense and the BM25 ranking of one query), ``store.chunks``
    (rows for chunk ids; chunks that are not visible any more are left out) and ``settings``; fusion,
    reranking and the score floor are the same for every backend, so a domain ranks alike on each.
    """

    settings: CollectionSettings
    store: Any

    def candidates(
        self, query: str, k: int, mode: SearchMode = "hybrid", flt: dict[str, Any] | None = None
    ) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        raise NotImplementedError

    def search(
        self,
        query: str,
        top_k: int = 5,
        mode: SearchMode = "hybrid",
        flt: dict[str, Any] | None = None,
        min_score: float | None = None,
        fusion: Fusion | None = None,
        reranker: Reranker | None = None,
    ) -> list[SearchHit]:
        """The ``top_k`` best chunks for ``query``.

        Hybrid search takes a pool of candidates from each half (four times ``top_k``, at least 40)
        and fuses them (``fusion``, default: the collection's). A ``reranker`` then re-scores the
        first ``rerank_depth`` fused candidates (each with its contextual header) and its scores
        replace the retrieval scores; ``min_score`` applies to whichever scores are final.
        """
        fusion = fusion or self.settings.fusion
        depth = max(top_k, self.settings.rerank_depth) if reranker is not None else top_k
        pool = depth if mode != "hybrid" else max(depth * 4, 40)
        dense, sparse = self.candidates(query, pool, mode, flt)
        ranked = fuse(dense, sparse, fusion)[:depth] if mode == "hybrid" else (dense or sparse)[:depth]
        rows = self.store.chunks([i for i, _ in ranked])
        ranked = [(i, s) for i, s in ranked if i in rows]  # a chunk deleted between ranking and fetching
        if reranker is not None and ranked:
            scores = reranker.score(query, [contextual_text(rows[i]) for i, _ in ranked])
            ranked = sorted(
                ((i, float(s)) for (i, _), s in zip(ranked, scores, strict=True)), key=lambda x: -x[1]
            )
        ranked = ranked[:top_k]
        if min_score is not None:
            ranked = [(i, s) for i, s in ranked if s >= min_score]
        return [self._hit(rows[i], i, s) for i, s in ranked]

    @staticmethod
    def _hit(row: dict[str, Any], chunk_id: int, score: float) -> SearchHit:
        return SearchHit(
            chunk_id=chunk_id,
            document_id=row["document_id"],
            text=row["text"],
            score=float(score),
            filename=row["filename"],
            title=row["title"],
            content_type=row["content_type"],
            language=row["language"],
            parent_id=row["parent_id"],
            location={k: row[k] for k in ("page", "section", "sheet", "row") if row[k] is not None},
            metadata=row["metadata"],
        )


class Collection(SearchMixin):
    def __init__(self, path: Path, embedder: Embedder, settings: CollectionSettings | None = None) -> None:
        self.path = path
        self.embedder = embedder
        self.settings = settings or CollectionSettings()
        path.mkdir(parents=True, exist_ok=True)
        self.store = DocumentStore(path / "store.sqlite")
        self._index_path = path / "vectors.faiss"
        self._lock = threading.RLock()
        self._dirty = False
        self.index: VectorIndex = self._open_index()
        self.last_reconcile = self.reconcile()

    # -- index lifecycle -------------------------------------------------------------------------
    def _wanted_kind(self, n: int) -> str:
        kind = self.settings.index_kind
        if kind == "auto":
            return "ivf" if n >= self.settings.ivf_threshold else "flat"
        return kind

    def _open_index(self) -> VectorIndex:
        if self._index_path.exists():
            try:
                index = FaissIndex.load(self._index_path, self.settings.nprobe)
                if index.index.d == self.embedder.dim:
                    return index
                log.warning("%s: index dimension differs from the embedder; rebuilding", self.path)
            except Exception:  # noqa: BLE001 - a corrupt cache is rebuilt from SQLite
                log.exception("%s: unreadable vector index; rebuilding from SQLite", self.path)
        return make_index("flat", self.embedder.dim)

    def rebuild(self, kind: str | None = None) -> None:
        """Build a fresh index of ``kind`` (default: what the size calls for) from SQLite vectors."""
        with self._lock:
            batches = list(self.store.vectors())
            ids = np.concatenate([b[0] for b in batches]) if batches else np.zeros(0, np.int64)
            vectors = (
                np.concatenate([b[1] for b in batches])
                if batches
                else np.zeros((0, self.embedder.dim), np.float32)
            )
            kind = kind or self._wanted_kind(len(ids))
            if kind == "ivf" and not len(ids):
                kind = "flat"
            index = make_index(kind, self.embedder.dim, vectors, self.settings.nprobe)
            index.add(ids, vectors)
            self.index = index
            self._dirty = True
            self.flush()

    def reconcile(self) -> ReconcileReport:
        with self._lock:
            report = ReconcileReport()
            truth = self.store.chunk_ids()
            if self._wanted_kind(len(truth)) != self.index.kind:
                self.rebuild()
                report.rebuilt = True
                return report
            have = self.index.ids()
            missing = np.setdiff1d(truth, have, assume_unique=True)
            extra = np.setdiff1d(have, truth, assume_unique=True)
            if len(extra):
                self.index.remove(extra)
                report.removed = len(extra)
            for ids, vectors in self.store.vectors(missing) if len(missing) else []:
                self.index.add(ids, vectors)
                report.added += len(ids)
            if report.added or report.removed:
                log.warning(
                    "%s: reconciled index with SQLite (+%d, -%d)", self.path, report.added, report.removed
                )
                self._dirty = True
                self.flush()
            return report

    def flush(self) -> bool:
        """Persist the vector index if it changed (atomic write); False if that failed.

        SQLite holds every vector, and the index is reconciled from it at every open, so a failed
        save (a full disk) loses nothing: the old file stays, the in-memory index keeps serving,
        and the next flush tries again. The failure is logged, not raised, so the documents
        already committed are still reported as stored.
        """
        with self._lock:
            if not self._dirty:
                return True
            try:
                self.index.save(self._index_path)
            except (OSError, RuntimeError) as exc:  # faiss reports write errors as RuntimeError
                log.warning(
                    "%s: vector index not saved (%s); it is rebuilt from SQLite if lost", self.path, exc
                )
                return False
            self._dirty = False
            return True

    def close(self) -> None:
        self.flush()
        self.store.close()

    # -- writes ----------------------------------------------------------------------------------
    def write(self, record: DocumentRecord, chunks: list[ChunkRow], keep_times: bool = False) -> None:
        """Store one document; returns once SQLite has committed it (the acknowledgement point)."""
        with self._lock:
            new_ids, removed = self.store.replace(record, chunks, keep_times)
            self.index.remove(removed)
            if chunks:
                self.index.add(new_ids, np.stack([c.vector for c in chunks]))
            self._dirty = True

    def write_many(
        self, items: list[tuple[DocumentRecord, list[ChunkRow]]], keep_times: bool = False
    ) -> None:
        """Documents one by one: each is its own SQLite transaction (and acknowledgement point)."""
        for record, chunks in items:
            self.write(record, chunks, keep_times)

    def after_batch(self) -> None:
        """Switch index kind if the size now calls for it, then persist."""
        with self._lock:
            if self._wanted_kind(len(self.index)) != self.index.kind:
                self.rebuild()
            self.flush()

    def delete(self, doc_id: str) -> list[str]:
        with self._lock:
            ids, removed = self.store.delete(doc_id)
            self.index.remove(removed)
            self._dirty = bool(ids) or self._dirty
            self.flush()
            return ids

    def candidates(
        self, query: str, k: int, mode: SearchMode = "hybrid", flt: dict[str, Any] | None = None
    ) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """The ``k`` best (chunk id, score) of the dense and of the BM25 side (empty if ``mode`` skips it)."""
        dense = self._dense(query, k, flt) if mode in ("dense", "hybrid") else []
        sparse = (
            self.store.bm25(query, k, flt, self.settings.head_weight) if mode in ("bm25", "hybrid") else []
        )
        return dense, sparse

    def _dense(self, query: str, k: int, flt: dict[str, Any] | None) -> list[tuple[int, float]]:
        q = self.embedder.embed_query(query)
        with self._lock:
            if not flt:
                scores, ids = self.index.search(q, k)
                return list(zip(ids.tolist(), scores.tolist(), strict=True))
            allowed = self.store.filtered_ids(flt)
            if not len(allowed):
                return []
            if len(allowed) > self.settings.exact_filter_limit:
                scores, ids = self.index.search(q, k, allowed=allowed)
                return list(zip(ids.tolist(), scores.tolist(), strict=True))
        # exact scoring over the filtered set: the filter applies before ranking, never after top-k
        best: list[tuple[int, float]] = []
        for ids, vectors in self.store.vectors(allowed):
            scores = vectors @ q
            best += list(zip(ids.tolist(), scores.tolist(), strict=True))
        best.sort(key=lambda x: -x[1])
        return best[:k]
