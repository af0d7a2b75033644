"""Scoring a request against every domain and picking the one that serves it.

Each domain is represented by what it already has: its profile's description, its few-shot
examples' inputs and the centroid of a sample of its documents' chunks, each embedded with the
knowledge stores' embedder. A query's similarity to a domain is the mean of its cosine to the
description, to the nearest example and to the centroid (the parts the domain has). A trained gate
(``app.gate.classifier``), when one was fitted for the current set of domains, scores instead with
its probabilities. The best domain serves when its score clears the threshold and leads the next
by more than the margin; otherwise the base model (or the routing domain itself) serves, and the
decision says why: ``low_confidence`` or ``tie``, never a coin toss.

One owner: the representations are computed on a worker thread under one lock, cached per profile
version (documents: refreshed after ``centroid_ttl_s``); nothing is embedded on the event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.catalog.catalog import GATE_NAME
from app.config import GateSettings
from app.gate.classifier import NONE, Classifier
from app.knowledge.base import KnowledgeBase
from app.protocol.profiles import DomainProfile
from indexers.store.errors import StoreUnavailable

#: The model name that asks the gate to choose among every domain (reserved in the catalog).
AUTO = GATE_NAME


@dataclass
class _Domain:
    """A domain's embedded parts (unit vectors) and the profile version they were built from."""

    version: tuple[Any, ...]
    description: np.ndarray | None
    examples: np.ndarray | None  # (n, dim)
    centroid: np.ndarray | None
    centroid_at: float = 0.0


@dataclass
class GateDecision:
    """What the gate chose and why; ``domain`` None: nothing cleared the bar."""

    domain: str | None
    decision: str  # routed | low_confidence | tie | no_domains (domain_removed: chosen, then deleted)
    method: str  # similarity | trained
    score: float | None
    threshold: float
    margin: float
    scores: dict[str, float]
    similarity: dict[str, dict[str, float]]
    trained: dict[str, float] | None = None
    tied: list[str] = field(default_factory=list)
    note: str | None = None
    seconds: float = 0.0

    def public(self, served: str) -> dict[str, Any]:
        out = {
            "served": served,
            "domain": self.domain,
            "decision": self.decision,
            "method": self.method,
            "score": self.score,
            "threshold": self.threshold,
            "margin": self.margin,
            "scores": self.scores,
            "similarity": self.similarity,
        }
        if self.trained is not None:
            out["trained"] = self.trained
        if self.tied:
            out["tied"] = self.tied
        if self.note:
            out["note"] = self.note
        return out

    def header(self, served: str) -> str:
        score = "none" if self.score is None else f"{self.score:.4f}"
        return f"served={served}; decision={self.decision}; method={self.method}; score={score}"


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


class Gate:
    def __init__(
        self,
        settings: GateSettings,
        knowledge: KnowledgeBase,
        profiles: Callable[[], list[DomainProfile]],
        folder: Path,
    ) -> None:
        self.settings = settings
        self.knowledge = knowledge
        self._profiles = profiles
        self.folder = folder
        self._lock = threading.Lock()
        self._domains: dict[str, _Domain] = {}
        self.classifier: Classifier | None = Classifier.load(folder)

    # -- representations -----------------------------------------------------------------------
    def _embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.knowledge.embedder.embed(texts), dtype=np.float32)

    def _represent(self, profile: DomainProfile) -> _Domain:
        """Built or refreshed under the lock (the caller holds it)."""
        version = (profile.version, profile.updated_at)
        now = time.monotonic()
        known = self._domains.get(profile.name)
        if known is None or known.version != version:
            description = profile.description.strip()
            inputs = [e.input for e in profile.examples]
            vectors = (
                self._embed(([description] if description else []) + inputs)
                if description or inputs
                else None
            )
            known = _Domain(
                version,
                vectors[0] if description and vectors is not None else None,
                vectors[1 if description else 0 :] if inputs and vectors is not None else None,
                None,
            )
            self._domains[profile.name] = known
        if now - known.centroid_at >= self.settings.centroid_ttl_s:
            try:
                texts = (
                    self.knowledge.texts_blocking(profile.name, self.settings.centroid_sample)
                    if self.knowledge.has(profile.name)
                    else []
                )
            except StoreUnavailable:  # the store is down: keep the last centroid, try again later
                return known
            known.centroid = _unit(self._embed(texts).mean(axis=0)) if texts else None
            known.centroid_at = now
        return known

    def _similarity(self, query: np.ndarray, d: _Domain) -> dict[str, float]:
        parts: dict[str, float] = {}
        if d.description is not None:
            parts["description"] = float(d.description @ query)
        if d.examples is not None and len(d.examples):
            parts["examples"] = float((d.examples @ query).max())
        if d.centroid is not None:
            parts["documents"] = float(d.centroid @ query)
        if parts:
            parts["score"] = sum(parts.values()) / len(parts)
        return {k: round(v, 4) for k, v in parts.items()}

    # -- deciding ------------------------------------------------------------------------------
    def candidates(self, among: list[str] | None) -> list[DomainProfile]:
        """Profiles the gate may choose: ``among`` (a routing domain's list) or every domain that
        does not route itself."""
        profiles = [p for p in self._profiles() if p.route is None]
        if among is not None:
            wanted = set(among)
            profiles = [p for p in profiles if p.name in wanted]
        return sorted(profiles, key=lambda p: p.name)

    def decide_blocking(
        self,
        query: str,
        among: list[str] | None = None,
        threshold: float | None = None,
        *,
        trained: bool = True,
    ) -> GateDecision:
        started = time.perf_counter()
        s = self.settings
        profiles = self.candidates(among)
        qv = _unit(self._embed([query or " "])[0])
        with self._lock:
            reps = {p.name: self._represent(p) for p in profiles}
            for gone in set(self._domains) - {p.name for p in self._profiles()}:
                self._domains.pop(gone, None)
        similarity = {name: self._similarity(qv, d) for name, d in reps.items()}
        similarity = {n: v for n, v in similarity.items() if v}
        classifier, note = (self.classifier if trained else None), None
        probabilities: dict[str, float] | None = None
        if classifier is not None:
            missing = sorted(set(similarity) - set(classifier.classes))
            if classifier.embedder != self.knowledge.embedder_name:
                note = "the trained gate was fitted with another embedder: similarity only"
            elif missing:
                note = (
                    f"the trained gate does not know {', '.join(missing)}: similarity only (train it again)"
                )
            else:
                probs = classifier.probabilities(qv)
                keep = set(similarity) | {NONE}
                probabilities = {c: round(p, 4) for c, p in probs.items() if c in keep}
        if probabilities is not None:
            method, bar = "trained", s.trained_threshold if threshold is None else threshold
            scores = {c: p for c, p in probabilities.items() if c != NONE}
        else:
            method, bar = "similarity", s.threshold if threshold is None else threshold
            scores = {n: v["score"] for n, v in similarity.items()}
        decision = GateDecision(
            None, "no_domains", method, None, bar, s.margin, scores, similarity, probabilities, note=note
        )
        if scores:
            ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
            best, top = ranked[0]
            decision.score = top
            tied = [n for n, v in ranked[1:] if top - v <= s.margin]
            if probabilities is not None and probabilities.get(NONE, 0.0) >= top:
                decision.decision = "low_confidence"
                decision.note = note or "the trained gate's off-domain class scored highest"
            elif top < bar:
                decision.decision = "low_confidence"
            elif tied:
                decision.decision, decision.tied = "tie", [best, *tied]
            else:
                decision.domain, decision.decision = best, "routed"
        decision.seconds = round(time.perf_counter() - started, 4)
        return decision

    async def decide(
        self, query: str, among: list[str] | None = None, threshold: float | None = None
    ) -> GateDecision:
        return await asyncio.to_thread(self.decide_blocking, query, among, threshold)

    # -- the trained gate ----------------------------------------------------------------------
    def install(self, classifier: Classifier | None) -> None:
        """Use ``classifier`` from now on (None: similarity only); saved by the caller."""
        self.classifier = classifier

    def state(self) -> dict[str, Any]:
        c = self.classifier
        return {
            "threshold": self.settings.threshold,
            "trained_threshold": self.settings.trained_threshold,
            "margin": self.settings.margin,
            "domains": [p.name for p in self.candidates(None)],
            "trained": None if c is None else {"classes": c.classes, "embedder": c.embedder, **c.meta},
        }
