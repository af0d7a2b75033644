"""The trained gate: a softmax regression over query embeddings, fitted from labelled queries.

Small on purpose: a few hundred labelled queries and a 384-d sentence embedding fit in well under
a second, and the weights are one matrix. A class ``NONE`` learns what is off every domain. Saved
as safetensors (weights) and JSON (classes, embedder, metrics), written atomically, loaded only
from the data dir.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from indexers.durable import write_bytes_durably, write_text_durably

#: The class of queries no domain should serve (labelled ``domain: null``).
NONE = "__none__"
WEIGHTS, META = "classifier.safetensors", "classifier.json"


@dataclass
class Classifier:
    classes: list[str]
    weights: np.ndarray  # (dim, classes)
    bias: np.ndarray  # (classes,)
    embedder: str
    meta: dict[str, Any] = field(default_factory=dict)

    def probabilities(self, vector: np.ndarray) -> dict[str, float]:
        logits = vector.astype(np.float32) @ self.weights + self.bias
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return {c: float(v) for c, v in zip(self.classes, p, strict=True)}

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save

        folder.mkdir(parents=True, exist_ok=True)
        blob = save({"weights": self.weights.astype(np.float32), "bias": self.bias.astype(np.float32)})
        write_bytes_durably(folder / WEIGHTS, blob)
        meta = {"classes": self.classes, "embedder": self.embedder, **self.meta}
        write_text_durably(folder / META, json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: Path) -> Classifier | None:
        from safetensors.numpy import load_file

        if not (folder / WEIGHTS).is_file() or not (folder / META).is_file():
            return None
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / WEIGHTS))
        classes = meta.pop("classes")
        embedder = meta.pop("embedder")
        return cls(classes, tensors["weights"], tensors["bias"], embedder, meta)


def fit(
    vectors: np.ndarray,
    labels: list[str],
    embedder: str,
    *,
    epochs: int = 300,
    l2: float = 1e-3,
    lr: float = 5.0,
) -> Classifier:
    """Full-batch gradient descent on the cross-entropy. Unit-length inputs give small logits, so
    the step is large; the L2 term keeps the weights from growing without bound on separable data."""
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(labels), len(classes)), dtype=np.float64)
    y[np.arange(len(labels)), [index[label] for label in labels]] = 1.0
    x = vectors.astype(np.float64)
    w = np.zeros((x.shape[1], len(classes)))
    b = np.zeros(len(classes))
    for _ in range(epochs):
        logits = x @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        grad = (p - y) / len(labels)
        w -= lr * (x.T @ grad + l2 * w)
        b -= lr * grad.sum(axis=0)
    return Classifier(classes, w.astype(np.float32), b.astype(np.float32), embedder)
