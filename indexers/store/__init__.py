"""The knowledge store: SQLite (documents, chunks, vectors, FTS5) is the source of truth; the
vector index is a rebuildable cache of it, behind a small interface (FAISS today, a distributed
vector store later).
"""

from indexers.store.collection import Collection, CollectionSettings, SearchHit
from indexers.store.vector_index import VectorIndex, make_index

__all__ = ["Collection", "CollectionSettings", "SearchHit", "VectorIndex", "make_index"]
