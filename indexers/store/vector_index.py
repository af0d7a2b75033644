"""Vector index interface and the FAISS backends (exact ``flat``, approximate ``ivf``).

Ids are the chunks' SQLite row ids (int64), so deletes and updates are real removals. ``ivf`` needs
training, so it is built from a full set of vectors (``rebuild``); the collection switches from
``flat`` to ``ivf`` past a configurable size when the kind is ``auto``.
"""

from __future__ import annotations

import abc
import math
from pathlib import Path

import numpy as np

from indexers.durable import replace_durably


class VectorIndex(abc.ABC):
    kind: str

    @abc.abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    @abc.abstractmethod
    def remove(self, ids: np.ndarray) -> None: ...

    @abc.abstractmethod
    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) by inner product; ``allowed`` restricts the candidates first."""

    @abc.abstractmethod
    def ids(self) -> np.ndarray: ...

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def save(self, path: Path) -> None:
        """Write atomically (temporary file, fsync, rename)."""


class FaissIndex(VectorIndex):
    def __init__(self, index, kind: str, nprobe: int = 16) -> None:
        import faiss

        self._faiss = faiss
        self.index = index
        self.kind = kind
        self.nprobe = nprobe
        if kind == "ivf":
            faiss.extract_index_ivf(index).nprobe = nprobe

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def flat(cls, dim: int) -> FaissIndex:
        import faiss

        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), "flat")

    @classmethod
    def ivf(cls, dim: int, training: np.ndarray, nprobe: int = 16, nlist: int | None = None) -> FaissIndex:
        import faiss

        n = len(training)
        nlist = nlist or max(1, min(4096, int(4 * math.sqrt(n))))
        nlist = min(nlist, max(1, n // 39))  # FAISS wants ~39 training points per list
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = training
        if n > nlist * 256:
            rng = np.random.default_rng(0)
            sample = training[rng.choice(n, nlist * 256, replace=False)]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        return cls(index, "ivf", nprobe)

    @classmethod
    def load(cls, path: Path, nprobe: int = 16) -> FaissIndex:
        import faiss

        index = faiss.read_index(str(path))
        kind = "ivf" if isinstance(index, faiss.IndexIVF) else "flat"
        return cls(index, kind, nprobe)

    # -- operations ------------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(
                np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64)
            )

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        faiss = self._faiss
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        k = min(k, len(self))
        if k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        params = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
            if self.kind == "ivf":
                params = faiss.SearchParametersIVF(sel=selector, nprobe=self.nprobe)
            else:
                params = faiss.SearchParameters(sel=selector)
        scores, ids = self.index.search(q, k, params=params)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def ids(self) -> np.ndarray:
        faiss = self._faiss
        if self.kind == "flat":
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        ivf = faiss.extract_index_ivf(self.index)
        lists = ivf.invlists
        out = [
            faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
            for i in range(ivf.nlist)
            if lists.list_size(i)
        ]
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        try:
            self._faiss.write_index(self.index, str(tmp))
            replace_durably(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a partial copy must not hold the space a retry needs
            raise


def make_index(kind: str, dim: int, vectors: np.ndarray | None = None, nprobe: int = 16) -> FaissIndex:
    """A new index of ``kind`` ('flat' or 'ivf'); 'ivf' is trained on ``vectors``."""
    if kind == "flat":
        return FaissIndex.flat(dim)
    if kind == "ivf":
        if vectors is None or not len(vectors):
            raise ValueError("an ivf index needs vectors to train on")
        return FaissIndex.ivf(dim, vectors, nprobe=nprobe)
    raise ValueError(f"unknown index kind {kind!r}")
