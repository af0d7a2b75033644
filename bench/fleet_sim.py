"""A large fleet simulated around the real routing code (``app.fleet.policy``).

16 replicas, 500 adapters, Zipf-popular traffic (Poisson arrivals): each request names an adapter
and the domain it belongs to. Replicas are simulated — parallel slots (continuous batching seen
from outside), an LRU of loaded adapters (vLLM's ``max_cpu_loras``) and an LRU of cached domain
prefixes (vLLM's prefix cache) — and the policies are the service's own objects, asked with the same
``ReplicaView`` snapshots the service builds.

    python bench/fleet_sim.py [--requests 20000] [--replicas 16] [--adapters 500]

Writes ``docs/results/fleet-sim.json`` and ``docs/fleet-sim.svg`` (adapter loads per request, p99
queueing and prefix-cache hit rate per policy, at three loads).

Service-time model (units of one decode of a request): 1.0 decode + 0.4 prefill (0.1 when the
domain's prefix is cached on that replica) + 1.5 when the adapter must be loaded first.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import sys
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.fleet.policy import LeastLoaded, LoraAffinity, ReplicaView, RoundRobin, RouteKey  # noqa: E402

DECODE, PREFILL, PREFILL_HIT, LOAD = 1.0, 0.4, 0.1, 1.5


@dataclass
class SimReplica:
    name: str
    slots: int
    capacity: int
    prefixes: int
    busy: int = 0
    queue: deque = field(default_factory=deque)
    adapters: OrderedDict = field(default_factory=OrderedDict)
    cached: OrderedDict = field(default_factory=OrderedDict)
    users: dict = field(default_factory=dict)

    def view(self) -> ReplicaView:
        return ReplicaView(
            self.name,
            outstanding=self.busy + len(self.queue),
            resident=frozenset(self.adapters),
            capacity=self.capacity,
        )


def zipf_weights(n: int, s: float) -> list[float]:
    return [1 / (k + 1) ** s for k in range(n)]


def simulate(
    policy,
    *,
    replicas: int,
    adapters: int,
    domains: int,
    requests: int,
    load: float,
    slots: int,
    capacity: int,
    prefixes: int,
    zipf: float,
    seed: int,
) -> dict:
    rng = random.Random(seed)
    fleet = [SimReplica(f"r{i}", slots, capacity, prefixes) for i in range(replicas)]
    by_name = {r.name: r for r in fleet}
    weights = zipf_weights(adapters, zipf)
    # service capacity: replicas x slots requests per (DECODE + PREFILL) time units
    rate = load * replicas * slots / (DECODE + PREFILL)
    t = 0.0
    events: list = []
    arrivals = []
    picks = rng.choices(range(adapters), weights=weights, k=requests)
    for a in picks:
        t += rng.expovariate(rate)
        arrivals.append((t, a))
    stats = {"loads": 0, "hits": 0, "waits": []}
    seq = 0

    def start(r: SimReplica, now: float, arrived: float, adapter: str, domain: str) -> None:
        nonlocal seq
        r.busy += 1
        cost = DECODE
        if adapter in r.adapters:
            r.adapters.move_to_end(adapter)
        else:
            stats["loads"] += 1
            cost += LOAD
            while len(r.adapters) >= r.capacity:
                idle = next((x for x in r.adapters if not r.users.get(x)), None)
                if idle is None:
                    break
                r.adapters.pop(idle)
            r.adapters[adapter] = None
        r.users[adapter] = r.users.get(adapter, 0) + 1
        if domain in r.cached:
            r.cached.move_to_end(domain)
            stats["hits"] += 1
            cost += PREFILL_HIT
        else:
            cost += PREFILL
            r.cached[domain] = None
            if len(r.cached) > r.prefixes:
                r.cached.popitem(last=False)
        stats["waits"].append(now - arrived)
        seq += 1
        heapq.heappush(events, (now + cost, seq, "done", r.name, adapter))

    i = 0
    while i < len(arrivals) or events:
        if events and (i >= len(arrivals) or events[0][0] <= arrivals[i][0]):
            now, _, _, name, adapter = heapq.heappop(events)
            r = by_name[name]
            r.busy -= 1
            r.users[adapter] -= 1
            if r.queue:
                arrived, a, d = r.queue.popleft()
                start(r, now, arrived, a, d)
            continue
        now, a = arrivals[i]
        i += 1
        adapter, domain = f"a{a}", f"d{a % domains}"
        ranked = policy.rank([r.view() for r in fleet], RouteKey(adapter, domain)).ranked
        r = by_name[ranked[0].name]
        if r.busy < r.slots:
            start(r, now, now, adapter, domain)
        else:
            r.queue.append((now, adapter, domain))
    waits = sorted(stats["waits"])
    return {
        "adapter_loads_per_request": round(stats["loads"] / requests, 4),
        "p99_queueing": round(waits[int(0.99 * (len(waits) - 1))], 3),
        "mean_queueing": round(sum(waits) / len(waits), 3),
        "prefix_hit_rate": round(stats["hits"] / requests, 4),
    }


def svg(results: dict, loads: list[float], path: Path) -> None:
    """Three small line charts (one per metric), one line per policy, load on the x axis."""
    metrics = [
        ("adapter_loads_per_request", "adapter loads / request"),
        ("p99_queueing", "p99 queueing (decode units)"),
        ("prefix_hit_rate", "prefix-cache hit rate"),
    ]
    colours = {"lora_affinity": "#1f77b4", "round_robin": "#d62728", "least_loaded": "#2ca02c"}
    w, h, pad = 300, 220, 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{3 * w + 20}" height="{h + 60}" font-family="sans-serif" '
        'font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    for m, (key, title) in enumerate(metrics):
        x0 = 10 + m * w
        top = max(max(results[p][str(load)][key] for load in loads) for p in results) or 1.0
        parts.append(f'<text x="{x0 + w / 2}" y="16" text-anchor="middle" font-weight="bold">{title}</text>')
        parts.append(f'<line x1="{x0 + pad}" y1="{h}" x2="{x0 + w - 10}" y2="{h}" stroke="black"/>')
        parts.append(f'<line x1="{x0 + pad}" y1="30" x2="{x0 + pad}" y2="{h}" stroke="black"/>')
        parts.append(f'<text x="{x0 + pad - 4}" y="34" text-anchor="end">{top:.3g}</text>')
        parts.append(f'<text x="{x0 + pad - 4}" y="{h}" text-anchor="end">0</text>')

        def xy(j: int, v: float, x0: float = x0, top: float = top) -> tuple[float, float]:
            x = x0 + pad + (w - pad - 20) * j / max(1, len(loads) - 1)
            return x, h - (h - 34) * v / top

        for j, load in enumerate(loads):
            x, _ = xy(j, 0)
            parts.append(f'<text x="{x}" y="{h + 14}" text-anchor="middle">{load:g}</text>')
        for p, colour in colours.items():
            points = " ".join(
                f"{x:.1f},{y:.1f}" for x, y in (xy(j, results[p][str(ld)][key]) for j, ld in enumerate(loads))
            )
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(
            f'<text x="{x0 + w / 2}" y="{h + 28}" text-anchor="middle">offered load (utilisation)</text>'
        )
    for k, (p, colour) in enumerate(colours.items()):
        parts.append(f'<rect x="{20 + k * 160}" y="{h + 40}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{36 + k * 160}" y="{h + 50}">{p}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--replicas", type=int, default=16)
    parser.add_argument("--adapters", type=int, default=500)
    parser.add_argument("--domains", type=int, default=100)
    parser.add_argument("--slots", type=int, default=8, help="Requests a replica runs at once.")
    parser.add_argument("--capacity", type=int, default=8, help="Adapters a replica holds (max_cpu_loras).")
    parser.add_argument("--prefixes", type=int, default=16, help="Domain prefixes a replica's cache holds.")
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--loads", default="0.5,0.7,0.9")
    args = parser.parse_args()
    loads = [float(x) for x in args.loads.split(",")]
    policies = {"lora_affinity": LoraAffinity, "round_robin": RoundRobin, "least_loaded": LeastLoaded}
    results: dict = {}
    for name, make in policies.items():
        results[name] = {}
        for load in loads:
            results[name][str(load)] = simulate(
                make(),
                replicas=args.replicas,
                adapters=args.adapters,
                domains=args.domains,
                requests=args.requests,
                load=load,
                slots=args.slots,
                capacity=args.capacity,
                prefixes=args.prefixes,
                zipf=args.zipf,
                seed=1,
            )
            print(name, load, results[name][str(load)], flush=True)
    out = {"config": vars(args), "results": results}
    (ROOT / "docs" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "docs" / "results" / "fleet-sim.json").write_text(json.dumps(out, indent=2))
    svg(results, loads, ROOT / "docs" / "fleet-sim.svg")


if __name__ == "__main__":
    main()
