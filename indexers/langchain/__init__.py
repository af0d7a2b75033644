"""Tailor through langchain-core's own interfaces (imports nothing from ``app``).

- ``TailorEmbeddings``: an embedder (the bundled all-MiniLM by default) as ``Embeddings``;
- ``TailorVectorStore``: a knowledge-store collection (FAISS + SQLite, hybrid search, filters)
  in-process as a ``VectorStore``; any ``Embeddings`` can back it;
- ``TailorRetriever``: a running Tailor's search route as a ``BaseRetriever``;
- ``push_documents``: LangChain ``Document``s (any document loader's output) into a domain of a
  running Tailor.
"""

from indexers.langchain.embeddings import LangChainEmbedder, TailorEmbeddings
from indexers.langchain.remote import TailorRetriever, push_documents
from indexers.langchain.vectorstore import TailorVectorStore

__all__ = ["LangChainEmbedder", "TailorEmbeddings", "TailorRetriever", "TailorVectorStore", "push_documents"]
