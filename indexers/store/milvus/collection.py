"""A domain's collection on Milvus: the FAISS collection's interface over ``MilvusStore``.

Dense search is Milvus's vector search (inner product, like the FAISS index) and BM25 is Milvus's
BM25 function over Tailor's own analysis (``store.terms``), both with the metadata filter as a
Milvus expression evaluated before ranking. Fusion, reranking and the score floor are the shared
``SearchMixin``'s, so a domain ranks alike on either backend.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from indexers import lexical
from indexers.embedding import Embedder
from indexers.store.collection import CollectionSettings, SearchMixin, SearchMode
from indexers.store.filters import milvus_expression
from indexers.store.milvus.store import MilvusStore
from indexers.store.sqlite_store import ChunkRow, DocumentRecord

log = logging.getLogger(__name__)

#: Extra candidates asked of each side: a chunk whose document is mid-write is dropped after ranking.
SLACK = 8


class MilvusCollection(SearchMixin):
    def __init__(
        self, store: MilvusStore, embedder: Embedder, settings: CollectionSettings | None = None
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.settings = settings or CollectionSettings()
        self.path = Path(store.conn.shown) / store.chunks_name  # for messages only
        self._lock = threading.RLock()
        self.last_reconcile = self.reconcile()

    # -- lifecycle -------------------------------------------------------------------------------
    def reconcile(self) -> int:
        """Finish writes that crashed long enough ago (see ``MilvusStore.sweep``)."""
        with self._lock:
            return self.store.sweep()

    def flush(self) -> bool:
        """Milvus persists each acknowledged write itself; nothing is cached here."""
        return True

    def close(self) -> None:
        self.store.close()

    # -- writes ----------------------------------------------------------------------------------
    def write(self, record: DocumentRecord, chunks: list[ChunkRow], keep_times: bool = False) -> None:
        with self._lock:
            self.store.replace(record, chunks, keep_times)

    def write_many(
        self, items: list[tuple[DocumentRecord, list[ChunkRow]]], keep_times: bool = False
    ) -> None:
        """Several documents, each switched as a unit, in a few round trips for the batch."""
        with self._lock:
            self.store.replace_many(items, keep_times)

    def after_batch(self) -> None:
        """Finish stale writes; on Milvus Lite also seal what the batch wrote, which builds its
        indexes (measured: searches over unsealed rows were ~10x slower). A Milvus server seals
        segments itself, and flushing it after every batch would only make small segments."""
        self.reconcile()
        if self.store.conn.embedded:
            with self._lock:
                self.store.conn.call("flush", self.store.chunks_name)
                self.store.conn.call("flush", self.store.documents_name)

    def delete(self, doc_id: str) -> list[str]:
        with self._lock:
            return self.store.delete(doc_id)

    # -- search ----------------------------------------------------------------------------------
    def candidates(
        self, query: str, k: int, mode: SearchMode = "hybrid", flt: dict[str, Any] | None = None
    ) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        expr = milvus_expression(flt)  # FilterError before any call
        dense = self._dense(query, k, expr) if mode in ("dense", "hybrid") else []
        sparse = self._bm25(query, k, expr) if mode in ("bm25", "hybrid") else []
        # one visibility check for both sides: chunks of a version that is not current are dropped
        shown = {int(r["id"]) for r in self.store.visible(dense + sparse)}
        return (
            [(int(r["id"]), float(r["score"])) for r in dense if int(r["id"]) in shown][:k],
            # Milvus Lite reports BM25 as a negative distance, a Milvus server as a positive score
            [(int(r["id"]), abs(float(r["score"]))) for r in sparse if int(r["id"]) in shown][:k],
        )

    def _search(self, data: list[Any], field: str, metric: str, k: int, expr: str) -> list[dict[str, Any]]:
        hits = self.store.conn.call(
            "search",
            self.store.chunks_name,
            data=data,
            anns_field=field,
            limit=k + SLACK,
            filter=expr,
            output_fields=["doc_id", "doc_version"],
            search_params={"metric_type": metric},
        )
        return [{"id": h["id"], "score": h["distance"], **h["entity"]} for h in hits[0]] if hits else []

    def _dense(self, query: str, k: int, expr: str) -> list[dict[str, Any]]:
        q = self.embedder.embed_query(query)
        return self._search([q.tolist()], "vector", "IP", k, expr)

    def _bm25(self, query: str, k: int, expr: str) -> list[dict[str, Any]]:
        words = lexical.query_terms(query, self.store.languages())
        return self._search([" ".join(words)], "sparse", "BM25", k, expr) if words else []
