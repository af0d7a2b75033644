"""The catalog under concurrency, on a real server: atomic creates, referenced deletes, leases.

Each race here was reproduced against the registries the catalog replaced: two creates of one name
both answered 201, deleting an adapter a domain named made every request to the domain 404, and an
unload during streaming requests pulled the adapter's folder from under them.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from tests.lora import make_adapter

QUESTION = [{"role": "user", "content": "Tell me about Paris."}]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, model_path: str) -> Path:
    return make_adapter(model_path, tmp_path_factory.mktemp("catalog-src") / "src", seed=21)


@pytest.fixture(scope="module")
def own(make_server, base_settings: Settings, tmp_path_factory, source: Path):
    """A server with its own data dir and one adapter folder, ``src``, in its adapters dir."""
    settings = base_settings.model_copy(update={"data_dir": tmp_path_factory.mktemp("catalog")})
    server = make_server(settings)
    shutil.copytree(source, server.data_dir / "adapters" / "src")
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client, server


def _upload(http: httpx.Client, name: str, source: Path) -> httpx.Response:
    files = [
        ("files", (n, (source / n).read_bytes()))
        for n in ("adapter_config.json", "adapter_model.safetensors")
    ]
    return http.post("/v1/adapters", data={"name": name}, files=files)


def test_concurrent_creates_of_one_name_give_exactly_one_201(own, source: Path) -> None:
    http, _ = own

    def create(name: str, start: threading.Barrier, i: int, kinds: int) -> tuple[str, int]:
        start.wait()
        if i % kinds == 0:
            return "adapter", http.post("/v1/adapters", json={"name": name, "path": "src"}).status_code
        if i % kinds == 1:
            return "adapter", _upload(http, name, source).status_code
        return "domain", http.put(f"/v1/domains/{name}", json={}).status_code

    # three rounds of adapters (path, upload) against domains, then one of adapters alone
    for round_, kinds in enumerate((3, 3, 3, 2)):
        name = f"twin-{round_}"
        start = threading.Barrier(9)
        with ThreadPoolExecutor(9) as pool:
            results = list(pool.map(lambda i: create(name, start, i, kinds), range(9)))  # noqa: B023
        codes = sorted(code for _, code in results)
        winner = next(kind for kind, code in results if code == 201)
        # exactly one create; a PUT that comes after a domain won replaces it (200, PUT's meaning)
        assert codes.count(201) == 1 and set(codes) <= {201, 409, 200}, results
        assert all(kind == winner == "domain" for kind, code in results if code == 200), results
        if winner == "adapter":  # an adapter is never replaced: every other create is refused
            assert codes == [201] + [409] * 8, results
        owner = http.get(f"/v1/models/{name}").json()["kind"]
        assert owner == winner
        listed = [m["id"] for m in http.get("/v1/models").json()["data"]]
        assert listed.count(name) == 1
        if owner == "domain":
            assert http.delete(f"/v1/domains/{name}").status_code == 200
        else:
            assert http.delete(f"/v1/adapters/{name}").status_code == 200


def test_concurrent_writes_of_one_domain_queue(own) -> None:
    """PUT is create-or-replace: of 8 at once, one creates and the others replace it in turn."""
    http, _ = own
    start = threading.Barrier(8)

    def put(i: int) -> tuple[int, int]:
        start.wait()
        resp = http.put("/v1/domains/queued", json={"system_prompt": f"writer {i}"})
        return resp.status_code, resp.json().get("version", 0)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(put, range(8)))
    assert sorted(code for code, _ in results) == [200] * 7 + [201], results
    assert sorted(version for _, version in results) == list(range(1, 9))
    assert http.delete("/v1/domains/queued").status_code == 200


def test_deleting_a_referenced_adapter_is_refused_unless_forced(own) -> None:
    http, _ = own
    assert http.post("/v1/adapters", json={"name": "ref-a", "path": "src"}).status_code == 201
    assert http.put("/v1/domains/uses-a", json={"adapter": "ref-a"}).status_code == 201
    for route in ("/v1/adapters/ref-a", "/v1/models/ref-a"):
        refused = http.delete(route)
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "adapter_referenced" and "uses-a" in error["message"]
    chat = {"model": "uses-a", "messages": QUESTION, "max_tokens": 2}
    assert http.post("/v1/chat/completions", json=chat).status_code == 200
    # a profile naming an adapter that is missing is refused too
    assert http.put("/v1/domains/uses-b", json={"adapter": "nope"}).status_code == 422
    forced = http.delete("/v1/adapters/ref-a", params={"force": "true"})
    assert forced.status_code == 200 and forced.json()["detached_from"] == ["uses-a"], forced.text
    assert http.get("/v1/domains/uses-a").json()["adapter"] is None
    assert http.post("/v1/chat/completions", json=chat).status_code == 200
    assert http.get("/v1/adapters/ref-a").status_code == 404
    http.delete("/v1/domains/uses-a")


def _stream(url: str, model: str, max_tokens: int, started: threading.Event | None = None) -> dict:
    """One streaming chat; returns its status, finish reason and any error event."""
    body = {
        "model": model,
        "messages": QUESTION,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    out: dict = {"status": None, "finish": None, "error": None, "chunks": 0}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as resp:
        out["status"] = resp.status_code
        if resp.status_code != 200:
            out["error"] = json.loads(resp.read())["error"]
            return out
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                out["error"] = event["error"]
                continue
            out["chunks"] += 1
            if out["chunks"] == 1 and started is not None:
                started.set()
            for choice in event.get("choices", []):
                out["finish"] = choice.get("finish_reason") or out["finish"]
    return out


def test_unload_during_16_streams_lets_every_stream_finish(own, source: Path) -> None:
    http, server = own
    assert _upload(http, "busy-a", source).status_code == 201  # uploaded: its folder goes with it
    folder = server.data_dir / "adapters" / "busy-a"
    assert folder.is_dir()
    started = [threading.Event() for _ in range(16)]
    with ThreadPoolExecutor(17) as pool:
        streams = [pool.submit(_stream, server.url, "busy-a", 48, s) for s in started]
        for s in started:
            assert s.wait(240)
        unload = pool.submit(http.delete, "/v1/adapters/busy-a")
        results = [f.result() for f in streams]
        deleted = unload.result()
    assert deleted.status_code == 200, deleted.text
    for r in results:
        assert r["status"] == 200 and r["error"] is None and r["finish"] == "length", r
    late = http.post("/v1/chat/completions", json={"model": "busy-a", "messages": QUESTION, "max_tokens": 2})
    assert late.status_code == 404
    assert not folder.exists()
    # the engine never had to reload a deleted folder: it serves on, adapters included
    assert http.get("/health").json()["status"] == "ready"
    assert http.post("/v1/adapters", json={"name": "after", "path": "src"}).status_code == 201
    after = http.post("/v1/chat/completions", json={"model": "after", "messages": QUESTION, "max_tokens": 2})
    assert after.status_code == 200
    assert http.delete("/v1/adapters/after").status_code == 200


def test_an_unload_that_outlasts_the_drain_timeout_is_refused_and_keeps_the_adapter(
    make_server, base_settings: Settings, tmp_path: Path, source: Path
) -> None:
    settings = base_settings.model_copy(update={"data_dir": tmp_path / "data", "drain_timeout_s": 0.5})
    server = make_server(settings)
    with httpx.Client(base_url=server.url, timeout=120) as http:
        assert _upload(http, "held", source).status_code == 201
        started = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            stream = pool.submit(_stream, server.url, "held", 160, started)
            assert started.wait(240)
            t0 = time.monotonic()
            refused = http.delete("/v1/adapters/held")
            waited = time.monotonic() - t0
            result = stream.result()
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "adapter_in_use", (
            refused.text
        )
        assert waited >= 0.5
        assert result["finish"] == "length" and result["error"] is None, result
        assert [a["id"] for a in http.get("/v1/adapters").json()["data"]] == ["held"]
        chat = {"model": "held", "messages": QUESTION, "max_tokens": 2}
        assert http.post("/v1/chat/completions", json=chat).status_code == 200
        assert http.delete("/v1/adapters/held").status_code == 200
    server.stop()
