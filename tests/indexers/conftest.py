from __future__ import annotations

import pytest

from indexers.chunking import Chunker
from indexers.embedding import SentenceTransformerEmbedder


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    from app.checkpoints.prepare import embedder_dir

    return SentenceTransformerEmbedder(str(embedder_dir()), device="cpu")


@pytest.fixture(scope="session")
def chunker(embedder: SentenceTransformerEmbedder) -> Chunker:
    return Chunker(embedder.tokenizer, max_tokens=64, overlap=8)


@pytest.fixture(scope="session")
def milvus_backend(tmp_path_factory):
    """One embedded Milvus Lite for the session (its server starts once); tests use their own domains."""
    from indexers.store.milvus import MilvusBackend, MilvusConnection

    backend = MilvusBackend(MilvusConnection(str(tmp_path_factory.mktemp("milvus") / "store.db")))
    yield backend
    backend.close()


@pytest.fixture
def domain_name(request) -> str:
    """A domain name unique to the test (Milvus collections outlive a test's tmp_path)."""
    import re

    return re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60] or "t"
