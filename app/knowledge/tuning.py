"""Per-domain retrieval tuning: labelled queries in, the domain's best retrieval settings out.

``POST /v1/domains/{name}/optimize`` with ``queries`` runs this as a job. The comparison is
against the profile's current settings (the defaults for a domain never tuned), on queries the
choice never saw (``indexers.evaluation.choose``). With ``apply``, the choice is stored only if it
does not lose to the current settings on those held-out queries: tuning must never make a domain
worse than it was.
"""

from __future__ import annotations

from collections.abc import Callable

from app.knowledge.base import KnowledgeBase
from app.protocol.domains import TuningQuery
from app.protocol.profiles import FusionSettings, RetrievalSettings
from indexers.evaluation import Choice, LabelledQuery, Pools, Setting, choose


class UnknownDocuments(ValueError):
    """Labelled queries name documents the domain does not have."""


def current_setting(retrieval: RetrievalSettings) -> Setting:
    f = retrieval.fusion
    return Setting(retrieval.mode, f.method, f.dense_weight, f.adaptive)


def check_relevant(kb: KnowledgeBase, domain: str, queries: list[TuningQuery]) -> None:
    """Every relevant id must be a document of the domain (a typo would silently score zero)."""
    store = kb.collection(domain).store
    wanted = sorted({doc for q in queries for doc in q.relevant})
    missing = [doc for doc in wanted if store.get(doc) is None]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise UnknownDocuments(f"relevant documents not in domain '{domain}': {shown}{more}")


def tune_blocking(
    kb: KnowledgeBase,
    domain: str,
    queries: list[TuningQuery],
    current: RetrievalSettings,
    holdout: float,
    seed: int,
    on_progress: Callable[[int, int], None] | None = None,
) -> Choice:
    labelled = [LabelledQuery(q.query, frozenset(q.relevant)) for q in queries]
    pools = Pools.build(kb.collection(domain), labelled, on_progress)
    return choose(pools, labelled, current_setting(current), holdout=holdout, seed=seed)


def tuned_retrieval(current: RetrievalSettings, choice: Choice) -> RetrievalSettings:
    """The profile's retrieval settings with the choice's mode, fusion and top_k (the rest kept)."""
    best = choice.best
    fusion = current.fusion
    if best.mode == "hybrid":
        fusion = FusionSettings(
            method=best.method, dense_weight=best.dense_weight, rrf_k=fusion.rrf_k, adaptive=best.adaptive
        )
    return current.model_copy(update={"mode": best.mode, "top_k": choice.top_k, "fusion": fusion})
