"""One ``vllm serve`` replica as Tailor sees it: health, load, and the adapters it holds.

Everything here runs on the event loop (the engine's one owner of fleet state): a decision reads
a replica and acts on it without an ``await`` in between, and an adapter being loaded on a replica
is one shared future, so concurrent requests for it wait on the same load.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from app.fleet.policy import ReplicaView

State = Literal["starting", "healthy", "unhealthy", "mismatched"]


@dataclass
class Identity:
    """What a replica serves, as its API reports it; two replicas serve the same backbone when
    these are equal."""

    model: str
    max_model_len: int
    #: The replica's token ids of a probe text (its vocabulary and tokenizer).
    vocabulary: tuple[int, ...]
    #: Its greedy continuation of a fixed prompt (its weights and dtype).
    greedy: tuple[int, ...]
    #: Adapters it holds under Tailor's names (not part of the backbone: never compared).
    held: tuple[str, ...] = ()

    def differences(self, other: Identity) -> list[str]:
        out = []
        if self.model != other.model:
            out.append(f"model {other.model!r} instead of {self.model!r}")
        if self.max_model_len != other.max_model_len:
            out.append(f"window {other.max_model_len} instead of {self.max_model_len}")
        if self.vocabulary != other.vocabulary:
            out.append("a different tokenizer")
        if self.greedy != other.greedy:
            out.append("different greedy output on the probe (other weights or dtype)")
        return out


@dataclass
class Replica:
    url: str
    capacity: int
    state: State = "starting"
    reason: str | None = None
    identity: Identity | None = None
    #: Requests Tailor has running there now.
    outstanding: int = 0
    #: Queue depth from its ``/metrics`` (``vllm:num_requests_waiting``), refreshed by the monitor.
    waiting: int = 0
    #: Served adapter names it holds, least recently used first.
    resident: OrderedDict[str, None] = field(default_factory=OrderedDict)
    loading: dict[str, asyncio.Future] = field(default_factory=dict)
    #: Requests using each adapter there now (an adapter in use is never evicted).
    users: Counter[str] = field(default_factory=Counter)
    #: Adapters this replica could not load, with its answer (routed elsewhere until re-registered).
    refused: dict[str, str] = field(default_factory=dict)
    failures: int = 0
    retry_at: float = 0.0
    since: float = field(default_factory=time.monotonic)

    @property
    def healthy(self) -> bool:
        return self.state == "healthy"

    def view(self) -> ReplicaView:
        return ReplicaView(
            name=self.url,
            outstanding=self.outstanding,
            waiting=self.waiting,
            resident=frozenset(self.resident),
            capacity=self.capacity,
        )

    def touch(self, adapter: str) -> None:
        if adapter in self.resident:
            self.resident.move_to_end(adapter)

    def victim(self) -> str | None:
        """The least recently used adapter no request is using, if the replica is full."""
        if len(self.resident) + len(self.loading) < self.capacity:
            return None
        for name in self.resident:
            if not self.users[name]:
                return name
        return None

    def mark_down(self, reason: str, backoff: float, most: float = 5.0, state: State = "unhealthy") -> None:
        """Out of routing until a probe of its ``/health`` answers; what it held is forgotten
        (a restarted replica holds nothing). ``mismatched``: it answers but serves another backbone."""
        now = time.monotonic()
        if self.state == "healthy":
            self.failures = 0
        if self.state != state:
            self.since = now
        self.state, self.reason = state, reason
        self.failures += 1
        self.retry_at = now + min(backoff * 2 ** min(self.failures - 1, 16), most)
        self.resident.clear()

    def mark_up(self, identity: Identity) -> None:
        """Back in routing, holding what its listing showed (up to its capacity)."""
        self.state, self.reason, self.identity = "healthy", None, identity
        self.failures, self.waiting = 0, 0
        self.resident = OrderedDict((name, None) for name in identity.held[: self.capacity])
        self.refused.clear()
        self.since = time.monotonic()

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "state": self.state,
            "reason": self.reason,
            "for_s": round(time.monotonic() - self.since, 1),
            "outstanding": self.outstanding,
            "waiting": self.waiting,
            "adapters": list(self.resident),
            "capacity": self.capacity,
        }
