"""Per-replica Prometheus counters of the fleet, rendered into the service's ``/metrics``.

Own registry per engine (several apps in one test process never collide); gauges are read from
the replicas at scrape time.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from app.fleet.replica import Replica


class FleetMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tailor_replica_requests",
            "Requests sent to each replica (tries included).",
            ["replica"],
            registry=self.registry,
        )
        self.errors = Counter(
            "tailor_replica_errors",
            "Replica failures: down (refused, timed out, 5xx before output), interrupted (after output began).",
            ["replica", "kind"],
            registry=self.registry,
        )
        self.loads = Counter(
            "tailor_replica_adapter_loads",
            "Adapters loaded on each replica.",
            ["replica"],
            registry=self.registry,
        )
        self.evictions = Counter(
            "tailor_replica_adapter_evictions",
            "Adapters unloaded to make room (LRU).",
            ["replica"],
            registry=self.registry,
        )
        self.choices = Counter(
            "tailor_route_choices",
            "Routing decisions: the replica chosen first and why (resident, free_slot, evict, affinity, load, "
            "overflow, turn).",
            ["replica", "policy", "reason"],
            registry=self.registry,
        )
        self.rejoins = Counter(
            "tailor_replica_rejoins",
            "Replicas back in routing after a probe.",
            ["replica"],
            registry=self.registry,
        )
        self.healthy = Gauge(
            "tailor_replica_healthy", "1 while the replica is routed to.", ["replica"], registry=self.registry
        )
        self.outstanding = Gauge(
            "tailor_replica_outstanding",
            "Requests Tailor has running on the replica.",
            ["replica"],
            registry=self.registry,
        )
        self.resident = Gauge(
            "tailor_replica_adapters", "Adapters loaded on the replica.", ["replica"], registry=self.registry
        )

    def request(self, replica: str) -> None:
        self.requests.labels(replica).inc()

    def error(self, replica: str, kind: str) -> None:
        self.errors.labels(replica, kind).inc()

    def adapter_load(self, replica: str) -> None:
        self.loads.labels(replica).inc()

    def adapter_eviction(self, replica: str) -> None:
        self.evictions.labels(replica).inc()

    def choice(self, replica: str, policy: str, reason: str) -> None:
        self.choices.labels(replica, policy, reason).inc()

    def rejoined(self, replica: str) -> None:
        self.rejoins.labels(replica).inc()

    def render(self, replicas: Sequence[Replica]) -> bytes:
        for r in replicas:
            self.healthy.labels(r.url).set(1 if r.healthy else 0)
            self.outstanding.labels(r.url).set(r.outstanding)
            self.resident.labels(r.url).set(len(r.resident))
        return generate_latest(self.registry)
