"""The Milvus backend: which domains exist, opening and dropping their collections.

Which domains exist is asked of Milvus (its collection list), so a domain another Tailor process
created is seen here too. The catalog asks "is this name a domain?" on request paths, on the
event loop, so that question never waits for Milvus: a background thread lists the collections
every ``refresh_s`` and ``has``/``domains`` answer from the last listing (only the very first
question waits for one). When Milvus does not answer, the last listing stands — chat to the base
model or to adapters must not fail because the knowledge store is down; searching or ingesting a
domain then fails with ``StoreUnavailable``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from indexers.embedding import Embedder
from indexers.store.collection import CollectionSettings
from indexers.store.errors import StoreUnavailable
from indexers.store.filters import milvus_literal
from indexers.store.milvus.collection import MilvusCollection
from indexers.store.milvus.connection import MilvusConnection
from indexers.store.milvus.schema import (
    chunk_collection,
    chunk_indexes,
    chunk_schema,
    documents_collection,
    documents_indexes,
    documents_schema,
    domain_of,
)
from indexers.store.milvus.store import MilvusStore

log = logging.getLogger(__name__)


class MilvusBackend:
    def __init__(
        self,
        conn: MilvusConnection,
        prefix: str = "tailor_",
        index_type: str = "FLAT",
        stale_after_s: float = 600.0,
        refresh_s: float = 2.0,
    ) -> None:
        self.conn = conn
        self.prefix = prefix
        self.index_type = index_type
        self.stale_after_s = stale_after_s
        self.refresh_s = refresh_s
        self._known: set[str] = set()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._closed = threading.Event()
        self._documents_ready = False

    # -- which domains ---------------------------------------------------------------------------
    def _refresh(self) -> None:
        """List the domains' collections; when Milvus does not answer, the last listing stands."""
        try:
            names = self.conn.call("list_collections")
        except StoreUnavailable:
            return
        found = {d for n in names if (d := domain_of(self.prefix, n)) is not None}
        with self._lock:
            self._known = found

    def _watch(self) -> None:
        while not self._closed.wait(self.refresh_s):
            try:
                self._refresh()
            except Exception:  # noqa: BLE001 - the watcher must outlive any one bad answer
                log.exception("listing the knowledge store's collections failed")

    def _listing(self) -> set[str]:
        with self._lock:
            start = self._watcher is None
            if start:
                self._watcher = threading.Thread(
                    target=self._watch, name="tailor-milvus-domains", daemon=True
                )
        if start:
            self._refresh()  # the first answer waits for a listing; later ones never do
            self._watcher.start()
        with self._lock:
            return set(self._known)

    def domains(self) -> list[str]:
        return sorted(self._listing())

    def has(self, domain: str) -> bool:
        return domain in self._listing()

    # -- collections -----------------------------------------------------------------------------
    def _ensure_documents(self) -> str:
        name = documents_collection(self.prefix)
        if not self._documents_ready:
            if not self.conn.call("has_collection", name):
                self._create(name, documents_schema, documents_indexes)
            self.conn.call("load_collection", name)
            self._documents_ready = True
        return name

    def _create(self, name: str, schema: Any, indexes: Any) -> None:
        def create(client: Any) -> None:
            try:
                client.create_collection(
                    name,
                    schema=schema(client),
                    index_params=indexes(client),
                    consistency_level="Strong",
                    timeout=self.conn.timeout_s,
                )
            except Exception as exc:
                # another process created it between our check and this call
                if "exist" not in str(exc).lower():
                    raise

        self.conn.run(create)

    def open(
        self, domain: str, embedder: Embedder, settings: CollectionSettings, create: bool = False
    ) -> MilvusCollection | None:
        """The domain's collection; None when it has none and ``create`` is false."""
        documents = self._ensure_documents()
        name = chunk_collection(self.prefix, domain)
        if not self.conn.call("has_collection", name):
            if not create:
                return None
            self._create(
                name, lambda c: chunk_schema(c, embedder.dim), lambda c: chunk_indexes(c, self.index_type)
            )
        with self._lock:
            self._known.add(domain)  # before the next listing says so
        self.conn.call("load_collection", name)
        store = MilvusStore(
            self.conn,
            domain,
            name,
            documents,
            head_weight=settings.head_weight,
            stale_after_s=self.stale_after_s,
        )
        return MilvusCollection(store, embedder, settings)

    def drop(self, domain: str) -> bool:
        """Remove a domain: its records first (listings stop showing it), then its chunk collection."""
        name = chunk_collection(self.prefix, domain)
        documents = self._ensure_documents()
        self.conn.call("delete", documents, filter=f"domain == {milvus_literal(domain)}")
        existed = bool(self.conn.call("has_collection", name))
        if existed:
            self.conn.call("drop_collection", name)
        with self._lock:
            self._known.discard(domain)
        return existed

    def state(self) -> dict[str, Any]:
        self._listing()  # starts the watcher if nothing has yet: from then on it keeps this fresh
        return self.conn.state()

    def close(self) -> None:
        self._closed.set()
        if self._watcher is not None:
            self._watcher.join(timeout=self.conn.timeout_s + 1)
        self.conn.close()
