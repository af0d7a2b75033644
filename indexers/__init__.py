"""Knowledge store: loaders, chunking, embedding, FAISS + SQLite store, hybrid search.

A library: it never imports ``app``. Filled by the knowledge-store release.
"""
