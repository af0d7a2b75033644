"""A Tailor collection (FAISS + SQLite with FTS5) as a LangChain ``VectorStore``, in-process.

Documents go through Tailor's own ingestion (chunking, embedding, atomic writes), with vector-store
semantics: an id is one document whatever its text (no de-duplication), adding an id again
replaces it, and its metadata is stored as given and comes back unchanged. Search is dense by
default (``mode="hybrid"`` or ``"bm25"`` for Tailor's other rankings) and takes Tailor's metadata
filters (``{"year": {"$gte": 2020}}``), applied before ranking.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from indexers.chunking import Chunker
from indexers.ingest import Ingestor, Source
from indexers.langchain.embeddings import LangChainEmbedder, TailorEmbeddings
from indexers.store import Collection, CollectionSettings, SearchHit


class TailorVectorStore(VectorStore):
    def __init__(
        self,
        path: str | Path,
        embedding: Embeddings | None = None,
        *,
        tokenizer: Any = None,
        chunk_tokens: int = 200,
        chunk_overlap: int = 32,
        settings: CollectionSettings | None = None,
    ) -> None:
        """``path``: the collection's folder (created if missing). ``embedding``: the bundled
        all-MiniLM when omitted; any LangChain ``Embeddings`` otherwise."""
        self._embedding = embedding if embedding is not None else TailorEmbeddings()
        if isinstance(self._embedding, TailorEmbeddings):
            embedder = self._embedding.embedder
        else:
            embedder = LangChainEmbedder(self._embedding, tokenizer)
        self.collection = Collection(Path(path), embedder, settings)
        chunker = Chunker(
            tokenizer or embedder.tokenizer,
            chunk_tokens,
            chunk_overlap,
            owner=None if tokenizer else embedder.tokens,
        )
        self._ingestor = Ingestor(self.collection, chunker, dedupe=False)

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    # -- writes ----------------------------------------------------------------------------------
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict] | None = None,
        *,
        ids: list[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        texts = list(texts)
        given = list(ids) if ids is not None else [None] * len(texts)
        if len(given) != len(texts) or (metadatas is not None and len(metadatas) != len(texts)):
            raise ValueError("texts, metadatas and ids must have the same length")
        doc_ids = [i or str(uuid.uuid4()) for i in given]
        sources = [
            Source(text=t, id=i, metadata=dict(metadatas[n]) if metadatas else {})
            for n, (t, i) in enumerate(zip(texts, doc_ids, strict=True))
        ]
        failed = [r for r in self._ingestor.run(sources) if r.status == "error"]
        if failed:
            raise ValueError(f"could not add document {failed[0].id!r}: {failed[0].error}")
        return doc_ids

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        ids = kwargs.pop("ids", None) or [d.id for d in documents]
        return self.add_texts(
            [d.page_content for d in documents], [d.metadata for d in documents], ids=ids, **kwargs
        )

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete these documents (unknown ids are ignored); ``None`` deletes them all."""
        if ids is None:
            ids = [r.id for r in self.collection.store.list(0, 1 << 30)]
        for doc_id in ids:
            self.collection.delete(doc_id)
        return True

    # -- reads -----------------------------------------------------------------------------------
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Whole documents (their chunks joined in order), in the order asked; unknown ids are skipped."""
        out = []
        for doc_id in ids:
            record = self.collection.store.get(doc_id)
            if record is not None:
                text = "\n".join(self.collection.store.chunk_texts(doc_id))
                out.append(Document(id=doc_id, page_content=text, metadata=dict(record.metadata)))
        return out

    def _hits(self, query: str, k: int, filter: dict | None, mode: str) -> list[SearchHit]:
        return self.collection.search(query, top_k=k, mode=mode, flt=filter or None)

    @staticmethod
    def _document(hit: SearchHit) -> Document:
        return Document(id=hit.document_id, page_content=hit.text, metadata=dict(hit.metadata))

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: dict | None = None, mode: str = "dense", **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Chunks with their scores: cosine for ``dense``, fused ranks for ``hybrid``, BM25 for ``bm25``."""
        return [(self._document(h), h.score) for h in self._hits(query, k, filter, mode)]

    def similarity_search(
        self, query: str, k: int = 4, filter: dict | None = None, mode: str = "dense", **kwargs: Any
    ) -> list[Document]:
        return [self._document(h) for h in self._hits(query, k, filter, mode)]

    def _select_relevance_score_fn(self):
        # dense scores are cosine similarities in [-1, 1]
        return lambda score: (score + 1.0) / 2.0

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        path: str | Path | None = None,
        **kwargs: Any,
    ) -> TailorVectorStore:
        if path is None:
            raise ValueError("TailorVectorStore.from_texts needs path=: the collection's folder")
        store = cls(path, embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def close(self) -> None:
        self.collection.close()
