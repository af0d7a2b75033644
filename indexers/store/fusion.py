"""Fusing the dense and the BM25 ranking of one query into the hybrid ranking.

Which half is stronger depends on the corpus and its queries (paraphrased titles favour the
embedder, product codes and names favour BM25), so the fusion has a weight, ``dense_weight`` (BM25
gets the rest), stored per domain and tunable from labelled queries (``app.knowledge.tuning``).

Methods:

- ``relative`` (the default; Weaviate's relative-score fusion): each list's scores are min-max
  normalised over the candidates it returned, then added with the weights. It keeps how far ahead
  a list's best hit is: a BM25 match on a rare code outscores a flat dense list by a wide margin,
  which rank fusion cannot see.
- ``rrf``: weighted reciprocal-rank fusion, ``w / (k + rank)`` from each list (Elastic's and
  Vespa's weighted RRF). With equal weights it is the plain RRF the service used before.
- ``dbsf``: distribution-based score fusion (Qdrant): scores normalised by the list's mean ± 3
  standard deviations, which is less sensitive than min-max to a single outlying score.

``adaptive`` (on by default) adjusts the two weights per query by how clearly each list's best
candidate stands out from the rest of that list (the square root of its z-score). A list with no
clear winner is usually one that did not understand the query — the bundled English embedder on a
Spanish question, BM25 on a paraphrase without shared words — and it should not drag down a list
that has one. Measured on three corpora (docs/benchmarks.md): it is what keeps the hybrid at or
above its better half on the Spanish queries, where equal fixed weights fell below BM25 alone.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Literal

FusionMethod = Literal["relative", "rrf", "dbsf"]
Ranking = list[tuple[int, float]]


@dataclass(frozen=True)
class Fusion:
    method: FusionMethod = "relative"
    #: Share of the dense list in the fused score; BM25 gets ``1 - dense_weight``.
    dense_weight: float = 0.5
    #: RRF's rank offset (60 in the original paper); only for ``rrf``.
    rrf_k: int = 60
    #: Scale the weights per query by each list's confidence (see the module's docstring).
    adaptive: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.dense_weight <= 1.0:
            raise ValueError("dense_weight must be between 0 and 1")
        if self.rrf_k < 1:
            raise ValueError("rrf_k must be at least 1")


def _minmax(ranking: Ranking) -> dict[int, float]:
    if not ranking:
        return {}
    scores = [s for _, s in ranking]
    low, high = min(scores), max(scores)
    if high == low:
        return {i: 1.0 for i, _ in ranking}
    return {i: (s - low) / (high - low) for i, s in ranking}


def _distribution(ranking: Ranking) -> dict[int, float]:
    if len(ranking) < 2:
        return {i: 1.0 for i, _ in ranking}
    scores = [s for _, s in ranking]
    mean, spread = statistics.fmean(scores), 3 * statistics.pstdev(scores)
    if spread == 0:
        return {i: 1.0 for i, _ in ranking}
    low, high = mean - spread, mean + spread
    return {i: min(1.0, max(0.0, (s - low) / (high - low))) for i, s in ranking}


def confidence(ranking: Ranking) -> float:
    """How far the best score stands above the list's others: sqrt of its z-score (0 for an empty list).

    Two or fewer candidates say too little to measure; they count as 1, a modest confidence.
    """
    if len(ranking) < 3:
        return 1.0 if ranking else 0.0
    scores = [s for _, s in ranking]
    spread = statistics.pstdev(scores)
    if spread == 0:
        return 0.0
    return max(0.0, (scores[0] - statistics.fmean(scores)) / spread) ** 0.5


def weights(dense: Ranking, sparse: Ranking, fusion: Fusion) -> tuple[float, float]:
    """The dense and BM25 weights for this query (the configured ones unless ``adaptive``)."""
    base = (fusion.dense_weight, 1.0 - fusion.dense_weight)
    if not fusion.adaptive:
        return base
    scaled = (base[0] * confidence(dense), base[1] * confidence(sparse))
    total = sum(scaled)
    return (scaled[0] / total, scaled[1] / total) if total > 0 else base


def fuse(dense: Ranking, sparse: Ranking, fusion: Fusion) -> Ranking:
    """One ranking from the two, best first; an item missing from a list gets nothing from it."""
    share = weights(dense, sparse, fusion)
    fused: dict[int, float] = {}
    if fusion.method == "rrf":
        for weight, ranking in zip(share, (dense, sparse), strict=True):
            for rank, (item, _) in enumerate(ranking, start=1):
                fused[item] = fused.get(item, 0.0) + weight / (fusion.rrf_k + rank)
    else:
        normalise = _minmax if fusion.method == "relative" else _distribution
        for weight, ranking in zip(share, (dense, sparse), strict=True):
            for item, score in normalise(ranking).items():
                fused[item] = fused.get(item, 0.0) + weight * score
    return sorted(fused.items(), key=lambda x: -x[1])
