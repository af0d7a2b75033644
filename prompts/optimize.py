"""Choosing a template on labelled data: splits, answer metrics, label tasks, ensembles.

Pure functions; the service feeds them scores from the backbone.
"""

from __future__ import annotations

import math
import random
import re
import string
from collections import Counter
from collections.abc import Sequence

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def split(n: int, holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, held-out) index lists; both non-empty when n >= 2."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    k = min(n - 1, max(1, round(n * holdout)))
    return order[k:], order[:k]


def normalize(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def exact_match(prediction: str, expected: str) -> float:
    p, e = normalize(prediction), normalize(expected)
    return float(p == e or (bool(e) and p.startswith(e + " ")) or (bool(e) and p == e))


def f1(prediction: str, expected: str) -> float:
    p, e = normalize(prediction).split(), normalize(expected).split()
    if not p or not e:
        return float(p == e)
    common = sum((Counter(p) & Counter(e)).values())
    if not common:
        return 0.0
    precision, recall = common / len(p), common / len(e)
    return 2 * precision * recall / (precision + recall)


def label_set(outputs: Sequence[str], max_labels: int = 10) -> list[str] | None:
    """The labels, when the expected outputs are a few values each seen at least twice."""
    counts = Counter(o.strip() for o in outputs)
    if 2 <= len(counts) <= max_labels and min(counts.values()) >= 2:
        return sorted(counts)
    return None


def softmax(scores: Sequence[float]) -> list[float]:
    m = max(scores)
    exps = [math.exp(s - m) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def ensemble_predict(per_template: Sequence[Sequence[float]]) -> int:
    """Label index with the highest summed probability over templates (log-likelihoods in)."""
    summed = [0.0] * len(per_template[0])
    for scores in per_template:
        for i, p in enumerate(softmax(scores)):
            summed[i] += p
    return max(range(len(summed)), key=summed.__getitem__)
