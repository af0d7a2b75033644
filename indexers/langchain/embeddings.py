"""Embedders both ways: Tailor's as LangChain ``Embeddings``, and any ``Embeddings`` as Tailor's ``Embedder``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

from indexers.embedding import Embedder, SentenceTransformerEmbedder, bundled_embedder_dir


class TailorEmbeddings(Embeddings):
    """A Tailor ``Embedder`` (sentence-transformers, L2-normalized) as LangChain ``Embeddings``."""

    def __init__(self, embedder: Embedder | None = None, *, model: str | Path | None = None) -> None:
        self.embedder = embedder or SentenceTransformerEmbedder(str(model or bundled_embedder_dir()))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed(list(texts)).astype(float).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed_query(text).astype(float).tolist()


class WordTokenizer:
    """Whitespace words with character offsets: enough to size chunks when an embedder has no tokenizer."""

    _WORD = re.compile(r"\S+")

    def __call__(self, texts: list[str], **_: Any) -> dict[str, list]:
        spans = [[m.span() for m in self._WORD.finditer(t)] for t in texts]
        return {"input_ids": [[0] * len(s) for s in spans], "offset_mapping": spans}


class LangChainEmbedder(Embedder):
    """Any LangChain ``Embeddings`` behind Tailor's ``Embedder`` interface.

    Vectors are L2-normalized here, since collections score by inner product. Chunks are sized
    with ``tokenizer`` (a Hugging Face tokenizer) or, without one, in whitespace words.
    """

    def __init__(self, embeddings: Embeddings, tokenizer: Any = None, max_tokens: int = 256) -> None:
        self.embeddings = embeddings
        self.tokenizer = tokenizer or WordTokenizer()
        self.max_tokens = max_tokens
        self.dim = len(embeddings.embed_query("dimension probe"))

    @staticmethod
    def _unit(vectors: Any) -> np.ndarray:
        v = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        return np.ascontiguousarray(v / np.where(norms == 0, 1.0, norms), dtype=np.float32)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._unit(self.embeddings.embed_documents(list(texts)))

    def embed_query(self, text: str) -> np.ndarray:
        return self._unit([self.embeddings.embed_query(text)])[0]
