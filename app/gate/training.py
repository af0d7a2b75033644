"""Fitting the trained gate from labelled queries, as a job (``POST /v1/gate/train``).

Labelled queries (``domain`` null for off-domain ones) are split (seeded) into a training and a
held-out part; the classifier is fitted on the first, and both the trained gate and the similarity
gate are scored on the second (top-1 routing accuracy, off-domain queries counting as right when
the base model serves). With ``apply`` the classifier is then fitted again on every query and
installed; it is used from the next request on.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np

from app.gate.classifier import NONE, Classifier, fit
from app.gate.service import Gate


def choose(probabilities: dict[str, float], threshold: float, margin: float) -> str | None:
    """The trained gate's rule (as ``Gate.decide_blocking`` applies it): the best domain, unless the
    off-domain class beats it, it is under the threshold, or the next is within the margin."""
    ranked = sorted(((p, c) for c, p in probabilities.items() if c != NONE), reverse=True)
    if not ranked:
        return None
    top, best = ranked[0]
    if probabilities.get(NONE, 0.0) >= top or top < threshold:
        return None
    if len(ranked) > 1 and top - ranked[1][0] <= margin:
        return None
    return best


def _accuracy(predicted: list[str | None], labels: list[str | None]) -> dict[str, Any]:
    on = [(p, y) for p, y in zip(predicted, labels, strict=True) if y is not None]
    off = [(p, y) for p, y in zip(predicted, labels, strict=True) if y is None]
    right = sum(p == y for p, y in on) + sum(p is None for p, _ in off)
    return {
        "accuracy": round(right / len(labels), 4) if labels else None,
        "in_domain_top1": round(sum(p == y for p, y in on) / len(on), 4) if on else None,
        "off_domain_fallback": round(sum(p is None for p, _ in off) / len(off), 4) if off else None,
        "queries": len(labels),
    }


def train_blocking(
    gate: Gate,
    examples: list[tuple[str, str | None]],
    holdout: float,
    seed: int,
    apply: bool,
    progress: Callable[[int, int], None],
) -> dict[str, Any]:
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_held = int(round(len(examples) * holdout)) if holdout > 0 else 0
    held, train = order[:n_held], order[n_held:]
    texts = [q for q, _ in examples]
    vectors: list[np.ndarray] = []
    for start in range(0, len(texts), 64):
        vectors.append(np.asarray(gate.knowledge.embedder.embed(texts[start : start + 64]), dtype=np.float32))
        progress(min(start + 64, len(texts)), len(texts) * 2)
    x = np.concatenate(vectors)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    labels = [d if d is not None else NONE for _, d in examples]
    embedder = gate.knowledge.embedder_name
    result: dict[str, Any] = {"kind": "gate", "examples": len(examples), "held_out": n_held, "applied": False}
    if held:
        model = fit(x[train], [labels[i] for i in train], embedder)
        truth = [examples[i][1] for i in held]
        trained_pred, sim_pred = [], []
        for k, i in enumerate(held):
            trained_pred.append(
                choose(model.probabilities(x[i]), gate.settings.trained_threshold, gate.settings.margin)
            )
            sim_pred.append(gate.decide_blocking(texts[i], trained=False).domain)
            progress(len(texts) + (k + 1) * len(texts) // max(len(held), 1), len(texts) * 2)
        result["trained"] = _accuracy(trained_pred, truth)
        result["similarity"] = _accuracy(sim_pred, truth)
    if apply:
        final: Classifier = fit(x, labels, embedder)
        final.meta = {
            "examples": len(examples),
            "held_out": result.get("trained"),
            "similarity_held_out": result.get("similarity"),
        }
        final.save(gate.folder)
        gate.install(final)
        result["applied"] = True
    progress(len(texts) * 2, len(texts) * 2)
    return result
