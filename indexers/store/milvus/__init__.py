"""Knowledge stores on Milvus (a server by URI, or Milvus Lite embedded from a ``.db`` path)."""

from indexers.store.milvus.backend import MilvusBackend
from indexers.store.milvus.collection import MilvusCollection
from indexers.store.milvus.connection import MilvusConnection

__all__ = ["MilvusBackend", "MilvusCollection", "MilvusConnection"]
