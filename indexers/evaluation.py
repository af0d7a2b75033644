"""Retrieval quality from labelled queries, and choosing a collection's retrieval settings from them.

A labelled query names the documents that answer it. Each query's dense and BM25 candidate lists
are computed once (``Pools``); every setting — mode, fusion method and weight, passages per
request — is then scored on those lists without searching again, so a grid of a hundred settings
costs about as much as two searches per query.

``choose`` splits the queries (seeded): settings are compared on the selection part only, and
the winner and the defaults are then both scored on the held-out part, which the choice never
saw. That held-out comparison is what says whether tuning helped.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Literal

from indexers.store.collection import Collection
from indexers.store.fusion import Fusion, FusionMethod, fuse

Mode = Literal["dense", "bm25", "hybrid"]
#: Candidates taken from each half per query (what hybrid search takes for top_k ≤ 10).
POOL = 40
#: Documents a ranking is judged on (MRR@10, nDCG@10).
DEPTH = 10
WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
METHODS: tuple[FusionMethod, ...] = ("relative", "rrf", "dbsf")


@dataclass(frozen=True)
class LabelledQuery:
    query: str
    relevant: frozenset[str]


@dataclass(frozen=True)
class Setting:
    """One way to retrieve: the mode and, for hybrid, the fusion."""

    mode: Mode = "hybrid"
    method: FusionMethod = "relative"
    dense_weight: float = 0.5
    adaptive: bool = True

    @property
    def fusion(self) -> Fusion:
        return Fusion(method=self.method, dense_weight=self.dense_weight, adaptive=self.adaptive)

    def label(self) -> str:
        if self.mode != "hybrid":
            return self.mode
        return f"hybrid {self.method} dense={self.dense_weight:g}{' adaptive' if self.adaptive else ''}"


@dataclass
class Scores:
    mrr: float
    hit: dict[int, float]
    ndcg: float
    queries: int

    def public(self) -> dict:
        return {
            "mrr@10": round(self.mrr, 4),
            **{f"hit@{k}": round(v, 4) for k, v in self.hit.items()},
            "ndcg@10": round(self.ndcg, 4),
            "queries": self.queries,
        }


def score(
    rankings: Iterable[list[str]], queries: Iterable[LabelledQuery], hit_at: tuple[int, ...] = (1, 3, 5, 10)
) -> Scores:
    """MRR@10, hit@k (any relevant document in the first k) and nDCG@10 (binary gains)."""
    rr, ndcg, hits, n = [], [], dict.fromkeys(hit_at, 0), 0
    for ranking, q in zip(rankings, queries, strict=True):
        n += 1
        top = ranking[:DEPTH]
        ranks = [i for i, doc in enumerate(top, start=1) if doc in q.relevant]
        rr.append(1.0 / ranks[0] if ranks else 0.0)
        ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(q.relevant), DEPTH) + 1))
        ndcg.append(sum(1.0 / math.log2(r + 1) for r in ranks) / ideal if ideal else 0.0)
        for k in hit_at:
            hits[k] += bool(ranks and ranks[0] <= k)
    if not n:
        return Scores(0.0, dict.fromkeys(hit_at, 0.0), 0.0, 0)
    return Scores(statistics.fmean(rr), {k: v / n for k, v in hits.items()}, statistics.fmean(ndcg), n)


@dataclass
class Pools:
    """Each query's dense and BM25 candidates (chunk id, score) and the document of every chunk."""

    dense: list[list[tuple[int, float]]]
    sparse: list[list[tuple[int, float]]]
    document: dict[int, str]

    @classmethod
    def build(
        cls,
        collection: Collection,
        queries: list[LabelledQuery],
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Pools:
        dense, sparse, ids = [], [], set()
        for i, q in enumerate(queries, start=1):
            d, s = collection.candidates(q.query, POOL)
            dense.append(d)
            sparse.append(s)
            ids.update(c for c, _ in dense[-1])
            ids.update(c for c, _ in sparse[-1])
            if on_progress:
                on_progress(i, len(queries))
        rows = collection.store.chunks(sorted(ids))
        return cls(dense, sparse, {c: r["document_id"] for c, r in rows.items()})

    def ranking(self, i: int, setting: Setting) -> list[str]:
        """Query ``i``'s documents under ``setting``, best first, each once."""
        if setting.mode == "dense":
            chunks = self.dense[i]
        elif setting.mode == "bm25":
            chunks = self.sparse[i]
        else:
            chunks = fuse(self.dense[i], self.sparse[i], setting.fusion)
        return list(dict.fromkeys(self.document[c] for c, _ in chunks if c in self.document))

    def evaluate(
        self, setting: Setting, queries: list[LabelledQuery], which: list[int] | None = None
    ) -> Scores:
        which = list(range(len(queries))) if which is None else which
        return score([self.ranking(i, setting) for i in which], [queries[i] for i in which])


def grid() -> list[Setting]:
    """Every setting ``choose`` compares: dense, BM25, and each fusion method at each weight, with
    and without adaptive weights."""
    out = [Setting("dense"), Setting("bm25")]
    out += [Setting("hybrid", m, w, a) for a in (True, False) for m in METHODS for w in WEIGHTS]
    return out


@dataclass
class Choice:
    best: Setting
    top_k: int
    selection_size: int
    heldout_size: int
    #: Held-out scores of the defaults and of the choice (the honest comparison).
    default_heldout: Scores
    best_heldout: Scores
    best_selection: Scores
    default_selection: Scores
    #: Every setting's selection MRR@10, best first.
    table: list[tuple[Setting, float]] = field(default_factory=list)

    def public(self) -> dict:
        return {
            "selection_size": self.selection_size,
            "heldout_size": self.heldout_size,
            "best": {**asdict(self.best), "top_k": self.top_k},
            "default": {
                "selection": self.default_selection.public(),
                "heldout": self.default_heldout.public(),
            },
            "tuned": {"selection": self.best_selection.public(), "heldout": self.best_heldout.public()},
            "candidates": [{**asdict(s), "selection_mrr@10": round(m, 4)} for s, m in self.table[:20]],
        }


def split(n: int, holdout: float, seed: int) -> tuple[list[int], list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    cut = max(1, min(n - 1, round(n * (1 - holdout))))
    return sorted(order[:cut]), sorted(order[cut:])


#: Fewest passages tuning will set: with one or two, an answer is lost whenever its passage is
#: not ranked first, and a few labelled queries that all hit at rank 1 prove little.
MIN_TOP_K = 3


def smallest_top_k(
    pools: Pools, setting: Setting, queries: list[LabelledQuery], which: list[int], slack: float = 0.02
) -> int:
    """Fewest passages (``MIN_TOP_K``-10) whose hit rate on ``which`` is within ``slack`` of hit@10.

    More passages than that only lengthen the prompt: the answer's document is rarely further down.
    It does not change the ranking (MRR), so every labelled query may be used to choose it.
    """
    ks = tuple(range(1, DEPTH + 1))
    rankings = [pools.ranking(i, setting) for i in which]
    hits = score(rankings, [queries[i] for i in which], ks).hit
    return max(MIN_TOP_K, next(k for k in ks if hits[k] >= hits[DEPTH] - slack))


def choose(
    pools: Pools, queries: list[LabelledQuery], default: Setting, holdout: float = 0.5, seed: int = 0
) -> Choice:
    """The setting with the best selection MRR@10 (ties: the default, then the earlier in ``grid``)."""
    selection, heldout = split(len(queries), holdout, seed)
    table = [(s, pools.evaluate(s, queries, selection).mrr) for s in grid()]
    best_mrr = max(m for _, m in table)
    default_mrr = pools.evaluate(default, queries, selection).mrr
    best = default if default_mrr >= best_mrr - 1e-12 else next(s for s, m in table if m == best_mrr)
    table.sort(key=lambda x: -x[1])
    return Choice(
        best=best,
        top_k=smallest_top_k(pools, best, queries, list(range(len(queries)))),
        selection_size=len(selection),
        heldout_size=len(heldout),
        default_heldout=pools.evaluate(default, queries, heldout),
        best_heldout=pools.evaluate(best, queries, heldout),
        best_selection=pools.evaluate(best, queries, selection),
        default_selection=pools.evaluate(default, queries, selection),
        table=table,
    )
