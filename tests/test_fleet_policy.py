"""The fleet's pure pieces: routing policies (shared with bench/fleet_sim.py), replica flags, settings."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from app.fleet.policy import (
    FREE_SLOT,
    MUST_EVICT,
    RESIDENT,
    LeastLoaded,
    LoraAffinity,
    ReplicaView,
    RoundRobin,
    RouteKey,
    make_policy,
    rendezvous,
    residency,
)


def fleet(n: int, **per: dict) -> list[ReplicaView]:
    return [ReplicaView(name=f"r{i}", capacity=2, **per.get(f"r{i}", {})) for i in range(n)]


def test_residency_scores_resident_over_free_slot_over_eviction() -> None:
    full = ReplicaView("a", resident=frozenset({"x", "y"}), capacity=2)
    free = ReplicaView("b", resident=frozenset({"x"}), capacity=2)
    assert residency(full, "x") == RESIDENT
    assert residency(free, "z") == FREE_SLOT
    assert residency(full, "z") == MUST_EVICT
    assert residency(full, None) == RESIDENT


def test_an_adapter_goes_where_it_is_resident_even_off_its_rendezvous_home() -> None:
    replicas = fleet(4)
    home = rendezvous("ad", replicas)[0].name
    elsewhere = next(r.name for r in replicas if r.name != home)
    views = [
        ReplicaView(
            r.name, capacity=1, resident=frozenset({"ad"}) if r.name == elsewhere else frozenset({"o"})
        )
        for r in replicas
    ]
    decision = LoraAffinity().rank(views, RouteKey("ad", None))
    assert decision.ranked[0].name == elsewhere
    assert decision.reason == "resident"


def test_a_domain_sticks_to_its_rendezvous_home_and_domains_spread() -> None:
    replicas = fleet(8)
    policy = LoraAffinity(k=1)
    homes = {
        d: policy.rank(replicas, RouteKey(None, d)).ranked[0].name for d in (f"dom{i}" for i in range(64))
    }
    # the same key always lands on the same idle replica ...
    assert all(policy.rank(replicas, RouteKey(None, d)).ranked[0].name == h for d, h in homes.items())
    # ... and keys spread over the fleet (64 keys on 8 replicas: none empty, none with half)
    counts = Counter(homes.values())
    assert len(counts) == 8 and max(counts.values()) < 32


def test_removing_a_replica_moves_only_the_keys_it_held() -> None:
    replicas = fleet(8)
    keys = [f"k{i}" for i in range(200)]
    before = {k: rendezvous(k, replicas)[0].name for k in keys}
    after = {k: rendezvous(k, replicas[1:])[0].name for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert moved and all(before[k] == "r0" for k in moved)


def test_bounded_load_spreads_a_hot_key_instead_of_melting_its_home() -> None:
    policy = LoraAffinity(k=1, load_bound=1.25)
    load = Counter()
    for _ in range(40):  # 40 requests of one hot domain that never finish
        views = [ReplicaView(f"r{i}", outstanding=load[f"r{i}"], capacity=2) for i in range(4)]
        chosen = policy.rank(views, RouteKey(None, "hot")).ranked[0].name
        load[chosen] += 1
    # without the bound all 40 would sit on one replica; with it no replica takes one more once it
    # holds 1.25 x (mean + 1) of them
    assert max(load.values()) <= math.ceil(1.25 * (39 / 4 + 1))
    assert len(load) == 4


def test_an_idle_replica_beats_a_busy_one_with_the_same_residency() -> None:
    views = [ReplicaView("a", outstanding=6, capacity=2), ReplicaView("b", outstanding=0, capacity=2)]
    assert LoraAffinity(k=2).rank(views, RouteKey("x", None)).ranked[0].name == "b"


def test_round_robin_and_least_loaded() -> None:
    rr = RoundRobin()
    replicas = fleet(3)
    assert [rr.rank(replicas, RouteKey()).ranked[0].name for _ in range(4)] == ["r0", "r1", "r2", "r0"]
    views = [
        ReplicaView("a", outstanding=3),
        ReplicaView("b", outstanding=1),
        ReplicaView("c", outstanding=2),
    ]
    assert [v.name for v in LeastLoaded().rank(views, RouteKey()).ranked] == ["b", "c", "a"]


def test_the_ranking_is_a_failover_order_over_every_replica() -> None:
    replicas = fleet(5)
    for policy in (LoraAffinity(), RoundRobin(), LeastLoaded()):
        ranked = policy.rank(replicas, RouteKey("a", "d")).ranked
        assert sorted(r.name for r in ranked) == [r.name for r in replicas]
        assert policy.rank([], RouteKey()).ranked == ()


def test_unknown_policy_names_are_refused() -> None:
    assert make_policy("least_loaded").name == "least_loaded"
    with pytest.raises(ValueError, match="unknown routing policy"):
        make_policy("random")


def test_tailor_fleet_starts_replicas_with_the_flags_the_remote_backend_needs(
    model_path: str, tmp_path
) -> None:
    from app.config import Settings
    from app.fleet.launcher import ReplicaSpec, core_sets, replica_command, replica_env

    settings = Settings(
        data_dir=tmp_path,
        model=model_path,
        served_model_name="smol",
        engine={"max_model_len": 2048, "max_loras": 2, "max_cpu_loras": 3, "max_lora_rank": 12},
    )
    cmd = replica_command(settings, model_path, ReplicaSpec(port=8123, cores="1"))
    flags = " ".join(cmd)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    for flag in (
        "--served-model-name smol",
        "--port 8123",
        "--dtype float32",
        "--max-model-len 2048",
        "--enable-prompt-embeds",
        "--enable-lora",
        "--max-loras 2",
        "--max-cpu-loras 3",
        "--max-lora-rank 16",  # vLLM pre-allocates one of its fixed ranks: the smallest that holds 12
    ):
        assert flag in flags, flag
    env = replica_env(settings, ReplicaSpec(port=8123, cores="1"))
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "1" and env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert core_sets(2, cpus=2) == ["0", "1"]
    assert core_sets(2, cpus=8) == ["0-3", "4-7"]
    assert core_sets(3, cpus=2) == ["0", "1", "0"]


def test_remote_backend_settings_are_checked() -> None:
    from pydantic import ValidationError

    from app.config import EngineSettings

    with pytest.raises(ValidationError, match="needs engine.servers"):
        EngineSettings(backend="remote")
    with pytest.raises(ValidationError, match="not an http"):
        EngineSettings(backend="remote", servers="h1:8001")
    assert EngineSettings(backend="remote", servers=" http://a:1/, http://b:2 ").server_urls == [
        "http://a:1",
        "http://b:2",
    ]
