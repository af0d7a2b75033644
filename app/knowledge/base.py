"""``KnowledgeBase``: one collection per domain, on the configured backend.

Backend ``faiss`` keeps each domain under ``<data_dir>/collections/<domain>`` (SQLite + FAISS);
backend ``milvus`` keeps them in Milvus (``indexers.store.milvus``), shared by every Tailor
process that points at it. Everything above this class is the same for both.

The embedder is loaded once, on first use, and shared by every collection. Blocking work
(embedding, SQLite writes, FAISS) runs in worker threads, never on the event loop: one writer
thread serializes ingestion and deletes; searches run in the default thread pool.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from app.config import KnowledgeSettings
from app.loading import loading
from indexers.chunking import Chunker
from indexers.embedding import Embedder, SentenceTransformerEmbedder, embedder_name
from indexers.ingest import Ingestor, IngestResult, Progress, Source
from indexers.rerank import CrossEncoderReranker, Reranker
from indexers.store import Collection, CollectionSettings, SearchHit
from indexers.store.local import DOMAIN_NAME, LocalBackend

T = TypeVar("T")


class UnknownDomain(LookupError):
    pass


class NoReranker(LookupError):
    """Reranking was asked for and no reranker is configured."""


class RerankerUnavailable(RuntimeError):
    """The configured reranker could not be loaded (a server-side fault, not the request's)."""


def check_domain_name(name: str) -> str:
    if not DOMAIN_NAME.match(name) or ".." in name:
        raise ValueError(
            "a domain name is 1-63 characters: lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


class KnowledgeBase:
    def __init__(self, root: Path, embedder_path: str, settings: KnowledgeSettings) -> None:
        self.root = root
        self.embedder_path = embedder_path
        self.settings = settings
        self._embedder: Embedder | None = None
        self._reranker: Reranker | None = None
        self._collections: dict[str, Collection] = {}
        self._lock = threading.RLock()
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tailor-ingest")
        self.backend = make_backend(root, settings)

    # -- resources -------------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                device = self.settings.embed_device or None
                # under the shared load lock: never beside another model load (see app.loading)
                self._embedder = loading(
                    SentenceTransformerEmbedder,
                    self.embedder_path,
                    device=device,
                    query_prefix=self.settings.query_prefix,
                    passage_prefix=self.settings.passage_prefix,
                )
            return self._embedder

    @property
    def reranker(self) -> Reranker | None:
        """The configured cross-encoder, loaded on first use; None when none is configured."""
        if not self.settings.reranker:
            return None
        with self._lock:
            if self._reranker is None:
                device = self.settings.embed_device or None
                try:
                    self._reranker = loading(CrossEncoderReranker, self.settings.reranker, device=device)
                except Exception as exc:  # noqa: BLE001 - any load failure: searches without it are refused
                    raise RerankerUnavailable(
                        f"the reranker {self.settings.reranker!r} could not be loaded: {type(exc).__name__}: {exc}"
                    ) from exc
            return self._reranker

    @property
    def embedder_name(self) -> str:
        """The embedder's public name (``model`` in ``/v1/embeddings``): its folder's name."""
        return embedder_name(self.embedder_path)

    def embedder_window(self) -> int | None:
        """Input tokens the embedder reads, without loading it (its sentence-transformers config)."""
        if self._embedder is not None:
            return self._embedder.max_tokens
        try:
            config = json.loads((Path(self.embedder_path) / "sentence_bert_config.json").read_text())
            return int(config["max_seq_length"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _collection_settings(self) -> CollectionSettings:
        s = self.settings
        return CollectionSettings(
            index_kind=s.index_kind,
            ivf_threshold=s.ivf_threshold,
            nprobe=s.nprobe,
            head_weight=s.title_weight,
            rerank_depth=s.rerank_depth,
        )

    def domains(self) -> list[str]:
        """Domains that have a knowledge store."""
        return self.backend.domains()

    def has(self, domain: str) -> bool:
        return bool(DOMAIN_NAME.match(domain)) and self.backend.has(domain)

    def state(self) -> dict[str, Any]:
        """The backend, and whether it answers (``/health``); never raises."""
        return self.backend.state()

    def collection(self, domain: str, create: bool = False) -> Collection:
        check_domain_name(domain)
        with self._lock:
            if domain in self._collections:
                return self._collections[domain]
            collection = self.backend.open(domain, self.embedder, self._collection_settings(), create=create)
            if collection is None:
                raise UnknownDomain(domain)
            self._collections[domain] = collection
            return collection

    def close(self) -> None:
        self.writer.shutdown(wait=True)
        with self._lock:
            for c in self._collections.values():
                c.close()
            self._collections.clear()
        self.backend.close()

    # -- operations (blocking; call through the async wrappers) ------------------------------------
    def ingest_blocking(
        self, domain: str, sources: list[Source], on_progress: Callable[[Progress], None] | None = None
    ) -> list[IngestResult]:
        collection = self.collection(domain, create=True)
        embedder = self.embedder
        chunker = Chunker(
            embedder.tokenizer,
            self.settings.chunk_tokens,
            min(self.settings.chunk_overlap, self.settings.chunk_tokens // 2),
            owner=embedder.tokens,
        )
        return Ingestor(collection, chunker, self.settings.embed_batch).run(sources, on_progress)

    def delete_blocking(self, domain: str, doc_id: str) -> list[str]:
        return self.collection(domain).delete(doc_id)

    def drop_blocking(self, domain: str) -> bool:
        check_domain_name(domain)
        with self._lock:
            collection = self._collections.pop(domain, None)
            if collection:
                collection.close()
            return self.backend.drop(domain)

    def texts_blocking(self, domain: str, limit: int) -> list[str]:
        """Up to ``limit`` chunk texts of a domain, in ingestion order (training on documents)."""
        return self.collection(domain).store.texts(limit)

    def search_blocking(
        self, domain: str, query: str, rerank: bool = False, **kwargs: Any
    ) -> list[SearchHit]:
        """Search a domain; ``rerank`` runs the configured reranker (an error if none is configured)."""
        reranker = None
        if rerank:
            reranker = self.reranker
            if reranker is None:
                raise NoReranker(
                    "retrieval.rerank needs a reranker: set TAILOR_KNOWLEDGE__RERANKER to a "
                    "sentence-transformers cross-encoder"
                )
        return self.collection(domain).search(query, reranker=reranker, **kwargs)

    # -- async wrappers --------------------------------------------------------------------------
    async def in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.writer, fn, *args)

    async def search(self, domain: str, query: str, **kwargs: Any) -> list[SearchHit]:
        return await asyncio.to_thread(self.search_blocking, domain, query, **kwargs)


def make_backend(root: Path, settings: KnowledgeSettings) -> Any:
    """The store backend the settings name (Milvus is imported only when chosen)."""
    if settings.backend == "milvus":
        from indexers.store.milvus import MilvusBackend, MilvusConnection

        uri = settings.milvus_uri or str(root.parent / "milvus.db")
        conn = MilvusConnection(
            uri, settings.milvus_token, settings.milvus_db, timeout_s=settings.milvus_timeout_s
        )
        return MilvusBackend(
            conn,
            prefix=settings.milvus_prefix,
            index_type=settings.milvus_index,
            stale_after_s=settings.milvus_stale_write_s,
        )
    return LocalBackend(root)
