"""Retrieval settings per domain over HTTP: fusion and reranking on the search route, and tuning
them from labelled queries (``POST /v1/domains/{name}/optimize`` with ``queries``)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from app.protocol.profiles import DomainProfile, FusionSettings, RetrievalOverride, RetrievalSettings
from tests.harness import wait_job

DOMAIN = "invoices"


@pytest.fixture(scope="module")
def codes(http: httpx.Client) -> list[str]:
    """40 invoices that differ only in their code: BM25 tells them apart, the embedder hardly can."""
    rng = np.random.default_rng(1)
    codes = [f"INV-{n}" for n in rng.choice(range(10_000, 99_999), 40, replace=False)]
    _ingest(http, codes)
    return codes


def _ingest(http: httpx.Client, codes: list[str]) -> None:
    docs = [
        {"id": c, "text": f"Invoice {c}: consulting services for March, payable within 30 days."}
        for c in codes
    ]
    resp = http.post(f"/v1/domains/{DOMAIN}/documents", json={"documents": docs})
    assert resp.status_code == 202, resp.text
    assert wait_job(http, resp.json())["status"] == "succeeded"


def search(http: httpx.Client, query: str, **body) -> list[str]:
    resp = http.post(f"/v1/domains/{DOMAIN}/search", json={"query": query, "top_k": 5, **body})
    assert resp.status_code == 200, resp.text
    return [h["document_id"] for h in resp.json()["data"]]


def test_search_route_takes_fusion_and_refuses_reranking_without_a_reranker(
    http: httpx.Client, codes: list[str]
) -> None:
    query = f"invoice {codes[3]}"
    assert search(http, query)[0] == codes[3]  # the default hybrid finds the code
    assert search(http, query, mode="hybrid", fusion={"method": "rrf", "dense_weight": 0.2})[0] == codes[3]
    assert search(http, query, fusion={"method": "dbsf"})[0] == codes[3]
    bad = http.post(f"/v1/domains/{DOMAIN}/search", json={"query": "x", "fusion": {"dense_weight": 2}})
    assert bad.status_code == 422
    assert (
        http.post(
            f"/v1/domains/{DOMAIN}/search", json={"query": "x", "fusion": {"method": "max"}}
        ).status_code
        == 422
    )
    resp = http.post(f"/v1/domains/{DOMAIN}/search", json={"query": "x", "rerank": True})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "no_reranker"
    assert "TAILOR_KNOWLEDGE__RERANKER" in resp.json()["error"]["message"]


def test_tuning_from_labelled_queries_beats_the_current_settings_on_held_out_queries(
    http: httpx.Client, codes: list[str]
) -> None:
    # a domain left on dense retrieval, which cannot tell invoice codes apart
    assert http.put(f"/v1/domains/{DOMAIN}", json={"retrieval": {"mode": "dense"}}).status_code in (200, 201)
    queries = [{"query": f"consulting invoice {c}", "relevant": [c]} for c in codes]
    resp = http.post(f"/v1/domains/{DOMAIN}/optimize", json={"queries": queries, "apply": True, "seed": 3})
    assert resp.status_code == 202, resp.text
    job = wait_job(http, resp.json())
    assert job["status"] == "succeeded", job
    assert job["progress"] == {"examples_total": 40, "examples_done": 40}
    result = job["optimization"]
    assert result["kind"] == "retrieval" and result["metric"] == "mrr@10"
    assert result["selection_size"] == 20 and result["heldout_size"] == 20
    best = result["best"]
    assert best["mode"] != "dense", best
    assert result["tuned"]["heldout"]["mrr@10"] > result["current"]["heldout"]["mrr@10"]
    assert result["candidates"][0]["selection_mrr@10"] >= result["candidates"][-1]["selection_mrr@10"]
    assert result["applied"] is True
    stored = http.get(f"/v1/domains/{DOMAIN}").json()
    assert stored["version"] == result["profile_version"]
    r = stored["retrieval"]
    assert r["mode"] == best["mode"] and r["top_k"] == best["top_k"]
    if best["mode"] == "hybrid":
        assert r["fusion"]["method"] == best["method"] and r["fusion"]["dense_weight"] == best["dense_weight"]
    # the search route now defaults to the tuned settings
    query = f"consulting invoice {codes[5]}"
    explicit = {
        "mode": best["mode"],
        "fusion": {"method": best["method"], "dense_weight": best["dense_weight"]},
    }
    assert search(http, query) == search(http, query, **explicit)


def test_tuning_validation(http: httpx.Client, codes: list[str]) -> None:
    q = [{"query": "invoice", "relevant": [codes[0]]}] * 4
    url = f"/v1/domains/{DOMAIN}/optimize"
    resp = http.post(url, json={"queries": [{"query": "invoice", "relevant": ["INV-nope", codes[0]]}] * 4})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "unknown_document"
    assert "INV-nope" in resp.json()["error"]["message"]
    both = {"queries": q, "candidates": ["{question}"], "examples": [{"input": "a", "output": "b"}] * 4}
    assert http.post(url, json=both).status_code == 422
    assert http.post(url, json={"queries": q[:3]}).status_code == 422
    assert http.post(url, json={"queries": [{"query": "x", "relevant": []}] * 4}).status_code == 422
    assert http.post(url, json={}).status_code == 422
    assert http.post("/v1/domains/nowhere/optimize", json={"queries": q}).status_code == 404
    http.put("/v1/domains/empty-shelf", json={"description": "no documents"})
    resp = http.post("/v1/domains/empty-shelf/optimize", json={"queries": q})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "no_documents"


def test_reranking_needs_a_loadable_reranker(http: httpx.Client, make_server, base_settings, codes) -> None:
    resp = http.put("/v1/domains/reranked", json={"retrieval": {"rerank": True}})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "no_reranker"
    knowledge = base_settings.knowledge.model_copy(update={"reranker": "/nonexistent/cross-encoder"})
    server = make_server(base_settings.model_copy(update={"knowledge": knowledge}))
    with httpx.Client(base_url=server.url, timeout=120) as own:  # its own data dir: the same invoices
        _ingest(own, codes)
    url = f"{server.url}/v1/domains/{DOMAIN}/search"
    resp = httpx.post(url, json={"query": "invoice", "rerank": True}, timeout=60)
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "reranker_unavailable"
    assert "/nonexistent/cross-encoder" in resp.json()["error"]["message"]
    assert (
        httpx.post(url, json={"query": f"invoice {codes[0]}"}, timeout=60).json()["data"][0]["document_id"]
        == codes[0]
    )


def test_a_partial_fusion_override_keeps_the_profiles_other_fields() -> None:
    profile = DomainProfile(
        name="p", retrieval=RetrievalSettings(fusion=FusionSettings(method="rrf", dense_weight=0.3, rrf_k=10))
    )
    merged = profile.retrieval_for(RetrievalOverride.model_validate({"fusion": {"dense_weight": 0.8}}))
    assert (merged.fusion.method, merged.fusion.dense_weight, merged.fusion.rrf_k) == ("rrf", 0.8, 10)
    assert profile.retrieval_for(RetrievalOverride(mode=None)).mode == "hybrid"  # null: the profile's
    assert profile.retrieval_for(RetrievalOverride(filter=None, top_k=2)).top_k == 2


def test_search_errors_name_the_field_of_their_route(http: httpx.Client, codes: list[str]) -> None:
    """One search path serves chat and the search route; its errors point at each route's own field."""
    bad = {"bad key!": 1}
    resp = http.post(f"/v1/domains/{DOMAIN}/search", json={"query": "invoice", "filter": bad})
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "filter" and resp.json()["error"]["message"].startswith(
        "Invalid filter:"
    )
    chat = {
        "model": DOMAIN,
        "messages": [{"role": "user", "content": "invoice"}],
        "retrieval": {"filter": bad},
    }
    resp = http.post("/v1/chat/completions", json=chat)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["param"] == "retrieval.filter" and error["message"].startswith("Invalid retrieval filter:")
    chat["retrieval"] = {"rerank": True}
    error = http.post("/v1/chat/completions", json=chat).json()["error"]
    assert error["code"] == "no_reranker" and error["param"] == "retrieval.rerank"
