"""Which replica serves a request: small, pure policies over a snapshot of the fleet.

A policy ranks the healthy replicas for one request; the engine tries them in that order (the
rest of the ranking is the failover order). Policies do no I/O and keep no clock, so the same code
runs in the service and in ``bench/fleet_sim.py``.

``lora_affinity`` (the default) adds three scores, as the Gateway API Inference Extension's
endpoint picker does:

- adapter residency: 1.0 the adapter is loaded there, 0.8 it has a free slot, 0.0 it must evict;
- load: the replica's outstanding requests (Tailor's own count plus the queue its ``/metrics``
  reports) against the busiest replica's;
- affinity: requests of one domain (or one adapter) prefer the same few replicas, so vLLM's
  prefix cache keeps hitting on the shared system prompt and template. The replicas a key
  prefers are its top ``k`` by rendezvous (highest-random-weight) hashing, as NVIDIA Dynamo places
  adapters: stable when replicas come and go, and spread evenly over keys.

Bounded load keeps a hot key from melting its replicas: a replica whose outstanding requests
exceed ``load_bound`` times the fleet's mean (plus one) drops to the end of the ranking, so the
next replica in the key's rendezvous order takes the overflow and loads the adapter there.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

#: The scores of the lora-affinity scorer: adapter resident, a free slot, a slot to free first.
RESIDENT, FREE_SLOT, MUST_EVICT = 1.0, 0.8, 0.0


@dataclass(frozen=True)
class ReplicaView:
    """What a policy may know of one replica at the moment of the decision."""

    name: str
    outstanding: int = 0
    #: Requests the replica's own queue holds beyond Tailor's count (from its ``/metrics``).
    waiting: int = 0
    resident: frozenset[str] = frozenset()
    capacity: int = 0

    @property
    def load(self) -> int:
        return self.outstanding + self.waiting


@dataclass(frozen=True)
class RouteKey:
    """What a request asks for: its adapter (served name) and its affinity key (the domain)."""

    adapter: str | None = None
    affinity: str | None = None


@dataclass(frozen=True)
class Decision:
    """A ranking and why its first replica won (for metrics: ``resident``, ``free_slot`` ...)."""

    ranked: tuple[ReplicaView, ...]
    reason: str


class Policy(Protocol):
    name: str

    def rank(self, replicas: Sequence[ReplicaView], key: RouteKey) -> Decision: ...


def residency(replica: ReplicaView, adapter: str | None) -> float:
    """The lora-affinity score of one replica for one adapter (1.0 without an adapter)."""
    if adapter is None or adapter in replica.resident:
        return RESIDENT
    if len(replica.resident) < replica.capacity:
        return FREE_SLOT
    return MUST_EVICT


def _weight(key: str, replica: str) -> int:
    """Rendezvous weight of ``replica`` for ``key``: stable across processes (no ``hash()`` salt)."""
    digest = hashlib.blake2b(f"{key}\0{replica}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous(key: str, replicas: Sequence[ReplicaView]) -> list[ReplicaView]:
    """The replicas in ``key``'s rendezvous order (highest weight first)."""
    return sorted(replicas, key=lambda r: _weight(key, r.name), reverse=True)


def _reason(best: ReplicaView, key: RouteKey, home: set[str], bounded: bool) -> str:
    if bounded:
        return "overflow"
    score = residency(best, key.adapter)
    if key.adapter is not None and score == RESIDENT:
        return "resident"
    if key.adapter is not None:
        return "free_slot" if score == FREE_SLOT else "evict"
    return "affinity" if best.name in home else "load"


@dataclass
class LoraAffinity:
    """Residency + load + rendezvous affinity, with bounded load (see the module docstring)."""

    name: str = "lora_affinity"
    #: Replicas a key prefers (its rendezvous top k); k=1 pins a key to one replica until it overflows.
    k: int = 2
    #: A replica above ``load_bound`` × (mean load + 1) is ranked last (bounded-load hashing).
    load_bound: float = 1.5
    w_residency: float = 1.0
    w_load: float = 1.0
    w_affinity: float = 0.5

    def rank(self, replicas: Sequence[ReplicaView], key: RouteKey) -> Decision:
        if not replicas:
            return Decision((), "none")
        order = rendezvous(key.affinity or key.adapter or "", replicas)
        position = {r.name: i for i, r in enumerate(order)}
        home = {r.name for r in order[: self.k]} if (key.affinity or key.adapter) else set()
        busiest = max(r.load for r in replicas)
        bound = math.ceil(self.load_bound * (sum(r.load for r in replicas) / len(replicas) + 1))

        def score(r: ReplicaView) -> float:
            load = r.load / (busiest + 1)
            near = 1.0 if r.name in home else 0.0
            return self.w_residency * residency(r, key.adapter) - self.w_load * load + self.w_affinity * near

        within = [r for r in replicas if r.load < bound]
        over = [r for r in replicas if r.load >= bound]
        ranked = sorted(within, key=lambda r: (-score(r), position[r.name]))
        ranked += sorted(over, key=lambda r: (r.load, position[r.name]))
        return Decision(tuple(ranked), _reason(ranked[0], key, home, bounded=not within))


@dataclass
class RoundRobin:
    """Each request to the next replica, whatever it holds (the baseline)."""

    name: str = "round_robin"
    _turn: itertools.count = field(default_factory=itertools.count, repr=False)

    def rank(self, replicas: Sequence[ReplicaView], key: RouteKey) -> Decision:
        if not replicas:
            return Decision((), "none")
        start = next(self._turn) % len(replicas)
        ordered = tuple(replicas[start:]) + tuple(replicas[:start])
        return Decision(ordered, "turn")


@dataclass
class LeastLoaded:
    """The replica with the fewest outstanding requests (ties: the one holding the adapter)."""

    name: str = "least_loaded"

    def rank(self, replicas: Sequence[ReplicaView], key: RouteKey) -> Decision:
        if not replicas:
            return Decision((), "none")
        ranked = sorted(enumerate(replicas), key=lambda p: (p[1].load, -residency(p[1], key.adapter), p[0]))
        return Decision(tuple(r for _, r in ranked), "load")


POLICIES = {"lora_affinity": LoraAffinity, "round_robin": RoundRobin, "least_loaded": LeastLoaded}


def make_policy(name: str) -> Policy:
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(f"unknown routing policy {name!r}; one of {', '.join(POLICIES)}") from None
