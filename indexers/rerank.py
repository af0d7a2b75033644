"""The reranking stage: a model that reads the query and each candidate together and re-scores them.

A bi-encoder (the embedder) and BM25 score the query and a chunk separately; a cross-encoder reads
both at once and is usually more precise, at the cost of one model pass per candidate. So it runs
only on the first ``rerank_depth`` fused candidates. The stage is an interface: any object with
``score(query, texts)`` fits; ``CrossEncoderReranker`` runs a sentence-transformers cross-encoder
from a local folder (``TAILOR_KNOWLEDGE__RERANKER``). No reranker ships with the service: none
installs offline here, so the bundled setup has the stage off.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import Any

import numpy as np

from indexers.documents import contextual_text as _contextual
from indexers.owner import OwnerThread


class Reranker(abc.ABC):
    #: Public name (its folder's), shown in search responses and ``/health``.
    name: str

    @abc.abstractmethod
    def score(self, query: str, texts: list[str]) -> np.ndarray:
        """One relevance score per text, higher is better (any scale)."""


class CrossEncoderReranker(Reranker):
    def __init__(
        self, model: str, device: str | None = None, batch_size: int = 32, max_length: int = 512
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        # safetensors only: a pickled checkpoint could run code when loaded
        self.model = CrossEncoder(
            model,
            device=device,
            max_length=max_length,
            local_files_only=True,
            model_kwargs={"use_safetensors": True},
        )
        self.name = Path(model).name or model
        self.batch_size = batch_size
        #: ``predict`` tokenizes with the model's own tokenizer: one thread uses it (see owner.py)
        self.owner = OwnerThread("tailor-reranker")

    def score(self, query: str, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.float32)
        return self.owner.call(self._score, query, texts)

    def _score(self, query: str, texts: list[str]) -> np.ndarray:
        scores = self.model.predict(
            [(query, t) for t in texts],
            batch_size=self.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        scores = np.asarray(scores, dtype=np.float32)
        # a model with several labels (rare for rerankers): the last one is "relevant"
        return scores[:, -1] if scores.ndim == 2 else scores


def contextual_text(row: dict[str, Any]) -> str:
    """A stored chunk (``DocumentStore.chunks`` row) under its header, as the reranker reads it."""
    return _contextual(row["text"], row.get("title"), row.get("section"), row.get("sheet"))
