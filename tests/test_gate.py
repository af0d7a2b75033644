"""The gate: ``model: "auto"`` and routing domains pick the domain that serves a request.

Its own server (on the session's engine) so the domains other tests create do not compete. Real
embedder, real HTTP, the official openai client for the OpenAI routes.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.harness import wait_job

DOMAINS = {
    "law": {
        "description": "Law: contracts, tenancy, landlords, courts, liability and legal disputes.",
        "examples": [
            {"input": "Can my landlord keep my security deposit?", "output": "It depends on the lease."},
            {"input": "What makes a contract void?", "output": "Illegality or lack of consent."},
        ],
    },
    "medicine": {
        "description": "Medicine: symptoms, diseases, drugs, dosages and treatments.",
        "examples": [
            {"input": "What is a safe dose of ibuprofen?", "output": "Ask a pharmacist."},
            {"input": "What are the symptoms of diabetes?", "output": "Thirst and fatigue."},
        ],
    },
    "telecom": {
        "description": "Telecom networks: bandwidth, routers, 5G, latency, packet loss and fiber.",
        "examples": [
            {"input": "Why is my 5G latency so high?", "output": "Congestion or distance."},
            {"input": "How do I configure a router?", "output": "Open its admin page."},
        ],
    },
}
CLEAR = {
    "My landlord refuses to return my deposit after I moved out. Can I sue him?": "law",
    "Is it dangerous to take paracetamol with alcohol?": "medicine",
    "What causes packet loss on a fiber link?": "telecom",
}
OFF_DOMAIN = "Write a short poem about autumn leaves falling in the park."


@pytest.fixture(scope="module")
def gated(make_server, base_settings):
    server = make_server(
        base_settings.model_copy(update={"data_dir": base_settings.data_dir.parent / "gate"})
    )
    with httpx.Client(base_url=server.url, timeout=120) as http:
        for seeded in ("legal", "medical", "finance"):  # the example profiles a first start installs
            assert http.delete(f"/v1/domains/{seeded}").status_code == 200
        for name, profile in DOMAINS.items():
            assert http.put(f"/v1/domains/{name}", json=profile).status_code == 201
        yield server, http
    server.stop()


def test_auto_routes_clear_queries_and_falls_back_for_off_domain_ones(gated) -> None:
    server, http = gated
    oai = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    assert "auto" in {m.id for m in oai.models.list().data}
    assert oai.models.retrieve("auto").model_extra["kind"] == "gate"
    for query, domain in CLEAR.items():
        raw = oai.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": query}], max_tokens=2, temperature=0
        )
        r = raw.parse()
        gate = r.model_extra["gate"]
        assert r.model == domain and gate["domain"] == domain and gate["decision"] == "routed", gate
        assert gate["method"] == "similarity" and gate["score"] >= gate["threshold"]
        assert set(gate["scores"]) == set(DOMAINS) and max(gate["scores"], key=gate["scores"].get) == domain
        assert set(gate["similarity"][domain]) == {"description", "examples", "score"}
        assert raw.headers["x-tailor-gate"].startswith(f"served={domain}; decision=routed; method=similarity")
    r = oai.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": OFF_DOMAIN}], max_tokens=2, temperature=0
    )
    gate = r.model_extra["gate"]
    base = http.get("/v1/models").json()["data"][0]["id"]
    assert r.model == base and gate["domain"] is None and gate["decision"] == "low_confidence"
    assert gate["served"] == base and gate["score"] < gate["threshold"]
    # streamed: the header, and the gate in the final event
    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "auto",
            "stream": True,
            "max_tokens": 2,
            "messages": [{"role": "user", "content": list(CLEAR)[1]}],
        },
    ) as resp:
        assert resp.headers["x-tailor-gate"].startswith("served=medicine; decision=routed")
        events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
    assert events[0]["model"] == "medicine" and events[-1]["gate"]["domain"] == "medicine"
    # completions too, and return_prompt shows the chosen domain's prompt with the gate beside it
    c = http.post(
        "/v1/completions",
        json={"model": "auto", "prompt": list(CLEAR)[2], "max_tokens": 2, "return_prompt": True},
    ).json()
    assert c["model"] == "telecom" and c["gate"]["domain"] == "telecom" and "fiber" in c["prompt"]
    # counted in the metrics
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'tailor_gate_decisions_total{decision="routed",method="similarity",served="law"}' in metrics
    assert (
        f'tailor_gate_decisions_total{{decision="low_confidence",method="similarity",served="{base}"}}'
        in metrics
    )
    # "auto" is the gate's: no domain may take the name
    assert http.put("/v1/domains/auto", json={}).status_code == 409


def test_documents_count_ties_are_explicit_and_a_routing_domain_routes_among_its_list(gated) -> None:
    _, http = gated
    # a domain known by its documents alone
    docs = [
        {"id": f"g{i}", "text": t}
        for i, t in enumerate(
            [
                "Sourdough bread needs a starter, flour, water and salt; proof the dough overnight.",
                "Bake the loaf at 250 degrees in a Dutch oven, lid on for twenty minutes.",
            ]
        )
    ]
    job = http.post("/v1/domains/baking/documents", json={"documents": docs})
    assert job.status_code in (200, 201, 202), job.text
    if job.status_code == 202:
        assert wait_job(http, job.json())["status"] == "succeeded"
    d = http.post("/v1/gate/score", json={"input": "How long should I proof sourdough dough?"}).json()
    assert d["domain"] == "baking" and set(d["similarity"]["baking"]) == {"documents", "score"}, d
    # two domains that look the same: a tie is reported, never settled by chance
    twin = {
        "description": "Astronomy: planets, stars and telescopes.",
        "examples": DOMAINS["law"]["examples"][:0],
    }
    for name in ("stars-a", "stars-b"):
        assert http.put(f"/v1/domains/{name}", json=twin).status_code == 201
    router = {"description": "Space questions.", "route": {"domains": ["stars-a", "stars-b", "law"]}}
    assert http.put("/v1/domains/space-desk", json=router).status_code == 201
    r = http.post(
        "/v1/chat/completions",
        json={
            "model": "space-desk",
            "max_tokens": 2,
            "messages": [{"role": "user", "content": "Which planet has rings?"}],
        },
    ).json()
    gate = r["gate"]
    assert gate["decision"] == "tie" and gate["tied"] == ["stars-a", "stars-b"] and gate["domain"] is None
    assert r["model"] == "space-desk"  # the routing domain itself serves when nothing is chosen
    assert set(gate["scores"]) == {"stars-a", "stars-b", "law"}  # only its list
    r = http.post(
        "/v1/chat/completions",
        json={
            "model": "space-desk",
            "max_tokens": 2,
            "messages": [{"role": "user", "content": list(CLEAR)[0]}],
        },
    ).json()
    assert r["model"] == "law" and r["gate"]["decision"] == "routed"
    assert http.put("/v1/domains/loop", json={"route": {"domains": ["loop"]}}).status_code == 422
    for name in ("stars-a", "stars-b", "space-desk"):
        http.delete(f"/v1/domains/{name}")


def test_a_trained_gate_is_fitted_by_a_job_and_then_decides(gated) -> None:
    _, http = gated
    queries = {
        "law": [
            "Is a verbal agreement a binding contract?",
            "Who pays when a tenant damages the flat?",
            "How do I appeal a court ruling?",
            "Can my employer change my contract without notice?",
            "What is the statute of limitations for a debt?",
            "Can I break my lease early?",
        ],
        "medicine": [
            "How much vitamin D should adults take?",
            "What does a high fever mean in a child?",
            "Can antibiotics treat the flu?",
            "What are side effects of statins?",
            "How is asthma treated?",
            "Why does my knee swell after running?",
        ],
        "telecom": [
            "How do I reduce wifi interference?",
            "What is the range of a 5G cell?",
            "Why does my fiber modem blink red?",
            "How much bandwidth does video streaming need?",
            "What is jitter on a VoIP call?",
            "How do routers pick a path?",
        ],
        None: [
            "Tell me a joke about cats.",
            "Write a haiku about the sea.",
            "What is your favourite colour?",
            "Sing me a lullaby.",
            "Describe a sunset over the mountains.",
            "Invent a name for a dragon.",
        ],
    }
    examples = [{"input": q, "domain": d} for d, qs in queries.items() for q in qs]
    bad = http.post("/v1/gate/train", json={"examples": [{"input": "x", "domain": "nope"}] * 4})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "examples.0.domain"
    job = http.post("/v1/gate/train", json={"examples": examples, "holdout": 0.25, "seed": 1})
    assert job.status_code == 202, job.text
    done = wait_job(http, job.json())
    assert done["status"] == "succeeded", done
    result = done["optimization"]
    assert result["kind"] == "gate" and result["applied"] and result["held_out"] == 6
    assert 0 <= result["trained"]["accuracy"] <= 1 and 0 <= result["similarity"]["accuracy"] <= 1
    state = http.get("/v1/gate").json()
    assert set(state["trained"]["classes"]) == {"law", "medicine", "telecom", "__none__", "baking"} - {
        "baking"
    }
    d = http.post(
        "/v1/gate/score", json={"input": list(CLEAR)[0], "domains": ["law", "medicine", "telecom"]}
    ).json()
    assert d["method"] == "trained" and d["domain"] == "law" and set(d["trained"]) >= {"law", "__none__"}
    # a domain the trained gate has never seen: similarity decides, and the decision says why
    d = http.post("/v1/gate/score", json={"input": list(CLEAR)[0]}).json()
    assert d["method"] == "similarity" and "does not know baking" in d["note"]
    assert http.delete("/v1/gate/trained").json()["deleted"] is True
    assert http.get("/v1/gate").json()["trained"] is None
