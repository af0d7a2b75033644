"""The knowledge store, on one of two backends behind one interface (``Collection``'s):

- embedded (``local.py``): SQLite (documents, chunks, vectors, FTS5) is the source of truth and
  the FAISS index a rebuildable cache of it;
- Milvus (``milvus/``): everything in Milvus, shared by every process pointing at it.

Search (fusion, reranking, score floor) and the filter language (``filters.py``) are shared.
"""

from indexers.store.collection import Collection, CollectionSettings, SearchHit
from indexers.store.vector_index import VectorIndex, make_index

__all__ = ["Collection", "CollectionSettings", "SearchHit", "VectorIndex", "make_index"]
