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
