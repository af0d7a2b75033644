"""Tailor on a fleet of two real `vllm serve` replicas (backend remote), against the embedded engine.

The replicas are started once for the module from this venv (``app.fleet.launcher``, the code
behind ``tailor fleet``), one core each, with small KV space; a Tailor with backend remote serves
them over real HTTP. Outputs are compared with the session's embedded engine (same checkpoint,
window and dtype): greedy results must be equal.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from app.config import Settings
from app.engine.base import EngineStartError
from app.fleet.engine import RemoteEngine
from app.fleet.launcher import ReplicaSpec, start_replica
from app.fleet.policy import LoraAffinity, RoundRobin
from app.main import create_app
from tests.harness import serve
from tests.lora import make_adapter
from tests.soft import peft_prompt, save_peft, upload

QUESTION = [{"role": "user", "content": "Name three colours."}]
WINDOW = 2048


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"replica {url} exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"replica {url} did not start")


def _kill(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


class Fleet:
    def __init__(self, settings: Settings, model: str, logs: Path) -> None:
        self.settings, self.model, self.logs = settings, model, logs
        self.procs: dict[str, object] = {}

    def start(self, cores: str, window: int | None = None, port: int | None = None) -> str:
        port = port or _port()
        url = f"http://127.0.0.1:{port}"
        spec = ReplicaSpec(port=port, cores=cores, window=window)
        self.procs[url] = start_replica(self.settings, self.model, spec, self.logs / f"{port}.log")
        return url

    def kill(self, url: str) -> None:
        _kill(self.procs[url])


@pytest.fixture(scope="module")
def fleet_settings(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    engine = base_settings.engine.model_dump() | {"max_loras": 1, "max_cpu_loras": 1}
    return base_settings.model_copy(
        update={"data_dir": tmp_path_factory.mktemp("fleet"), "engine": type(base_settings.engine)(**engine)}
    )


@pytest.fixture(scope="module")
def fleet(fleet_settings: Settings, model_path: str) -> Iterator[tuple[Fleet, list[str]]]:
    f = Fleet(fleet_settings, model_path, fleet_settings.data_dir / "replicas")
    urls = [f.start("0"), f.start("1")]
    try:
        for url in urls:
            _wait_healthy(url, f.procs[url])
        yield f, urls
    finally:
        for proc in f.procs.values():
            _kill(proc)


@pytest.fixture(scope="module")
def remote(make_server, loop, fleet, fleet_settings: Settings):
    """A Tailor with backend remote on both replicas (round robin: each request to the next)."""
    _, urls = fleet
    engine = fleet_settings.engine.model_copy(
        update={
            "backend": "remote",
            "servers": ",".join(urls),
            "routing": "round_robin",
            "probe_backoff_s": 0.5,
        }
    )
    settings = fleet_settings.model_copy(update={"engine": engine})
    server = serve(loop, create_app(settings))
    deadline = time.monotonic() + 120
    while httpx.get(server.url + "/health").status_code != 200:
        assert time.monotonic() < deadline, httpx.get(server.url + "/health").text
        time.sleep(0.3)
    server.data_dir = settings.data_dir
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rhttp(remote) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=remote.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def roai(remote) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{remote.url}/v1", api_key="unused", max_retries=0, timeout=120)


def _metric(client: httpx.Client, name: str) -> float:
    lines = client.get("/metrics").text.splitlines()
    return sum(float(x.rsplit(" ", 1)[1]) for x in lines if x.startswith(name + "{"))


def _engine(server) -> RemoteEngine:
    return server.server.config.app.state.tailor.engine


def _chat(client: openai.OpenAI, model: str, max_tokens: int = 16, **extra) -> str:
    resp = client.chat.completions.create(
        model=model, messages=QUESTION, max_tokens=max_tokens, temperature=0, **extra
    )
    return resp.choices[0].message.content


def test_base_requests_equal_the_embedded_engine(roai, oai, model_name: str) -> None:
    assert roai.models.list().data[0].id == model_name
    assert _chat(roai, model_name) == _chat(oai, model_name)
    # streamed: the same text, chunk by chunk
    stream = roai.chat.completions.create(
        model=model_name, messages=QUESTION, max_tokens=16, temperature=0, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == _chat(oai, model_name)
    # completions with log-probabilities: same tokens, same values
    a = roai.completions.create(
        model=model_name, prompt="The capital of France is", max_tokens=6, temperature=0, logprobs=2
    )
    b = oai.completions.create(
        model=model_name, prompt="The capital of France is", max_tokens=6, temperature=0, logprobs=2
    )
    assert a.choices[0].text == b.choices[0].text
    assert a.choices[0].logprobs.tokens == b.choices[0].logprobs.tokens
    assert a.choices[0].logprobs.token_logprobs == pytest.approx(
        b.choices[0].logprobs.token_logprobs, abs=1e-3
    )
    assert [sorted(t) for t in a.choices[0].logprobs.top_logprobs] == [
        sorted(t) for t in b.choices[0].logprobs.top_logprobs
    ]
    assert a.usage.completion_tokens == b.usage.completion_tokens == 6
    # structured output: vLLM's own decoder on the replica
    schema = {
        "type": "object",
        "properties": {"colour": {"enum": ["red", "green", "blue"]}},
        "required": ["colour"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}
    out = _chat(roai, model_name, max_tokens=48, response_format=fmt)
    assert "colour" in json.loads(out)
    assert out == _chat(oai, model_name, max_tokens=48, response_format=fmt)


def test_an_adapter_loads_on_the_replica_it_is_routed_to_and_serves_from_either(
    rhttp, roai, oai, http, fleet, remote, base_settings: Settings, model_path: str
) -> None:
    _, urls = fleet
    engine = _engine(remote)
    shared = remote.data_dir / "adapters"
    red = make_adapter(model_path, shared / "src-red", 1)
    green = make_adapter(model_path, shared / "src-green", 2)
    for name, folder in (("red", red), ("green", green)):
        resp = rhttp.post("/v1/adapters", json={"name": name, "path": folder.name})
        assert resp.status_code == 201, resp.text
    # the embedded engine's reference for red
    adapters_dir = base_settings.adapters_path
    adapters_dir.mkdir(parents=True, exist_ok=True)
    ref_red = make_adapter(model_path, adapters_dir / "src-fleet-red", 1)  # the same seed: the same weights
    assert http.post("/v1/adapters", json={"name": "fleet-red", "path": str(ref_red)}).status_code == 201
    expected = _chat(oai, "fleet-red")
    assert expected != _chat(oai, http.get("/v1/models").json()["data"][0]["id"])
    # round robin: two requests, one per replica; each loads red where it lands (one slot each,
    # so green is evicted there)
    assert [_chat(roai, "red") for _ in range(2)] == [expected, expected]
    held = {u: [m["id"] for m in httpx.get(u + "/v1/models").json()["data"]] for u in urls}
    assert all(any(i.startswith("red@") for i in ids) for ids in held.values()), held
    assert all(not any(i.startswith("green@") for i in ids) for ids in held.values()), held
    metrics = rhttp.get("/metrics").text
    assert "tailor_replica_adapter_evictions_total" in metrics
    # lora affinity: green now goes where it has room or is held, and then stays there
    engine.policy = LoraAffinity()
    try:
        outs = {_chat(roai, "green") for _ in range(3)}
        assert len(outs) == 1
        holders = [u for u in urls if any(a.startswith("green@") for a in engine._by_url[u].resident)]
        assert len(holders) == 1
        assert 'reason="resident"' in rhttp.get("/metrics").text
    finally:
        engine.policy = RoundRobin()
    # 8 concurrent first requests for a new adapter: one load per replica, shared by its requests
    blue = make_adapter(model_path, shared / "src-blue", 3)
    assert rhttp.post("/v1/adapters", json={"name": "blue", "path": blue.name}).status_code == 201
    loads = _metric(rhttp, "tailor_replica_adapter_loads_total")
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda _: _chat(roai, "blue"), range(8)))
    assert len(set(outs)) == 1
    held = [u for u in urls if any(a.startswith("blue@") for a in engine._by_url[u].resident)]
    # add_adapter loaded it on one replica already; the requests loaded it on the other, once
    assert held == urls
    assert _metric(rhttp, "tailor_replica_adapter_loads_total") - loads == 1
    # deleted: unloaded everywhere
    assert rhttp.delete("/v1/adapters/red").status_code == 200
    for u in urls:
        assert not any(m["id"].startswith("red@") for m in httpx.get(u + "/v1/models").json()["data"])
    health = rhttp.get("/health").json()
    assert [r["state"] for r in health["engine"]["replicas"]] == ["healthy", "healthy"]


def test_a_replica_that_cannot_read_the_adapter_gives_a_clear_error(rhttp, remote, model_path: str) -> None:
    # a folder only Tailor sees: the replicas are told another mount point
    engine = _engine(remote)
    folder = make_adapter(model_path, remote.data_dir / "adapters" / "src-hidden", 4)
    original = engine.settings
    engine.settings = original.model_copy(update={"replica_adapters_dir": "/nonexistent/adapters"})
    try:
        resp = rhttp.post("/v1/adapters", json={"name": "hidden", "path": folder.name})
    finally:
        engine.settings = original
    assert resp.status_code == 400, resp.text
    message = resp.json()["error"]["message"]
    assert "/nonexistent/adapters/src-hidden" in message and "could not load adapter 'hidden'" in message


def test_prompt_tuning_and_prefix_tuning_soft_prompts_equal_the_embedded_engine(
    rhttp, http, tmp_path: Path, model_path: str
) -> None:
    for method, name in (("prompt_tuning", "fleet-pt"), ("prefix_tuning", "fleet-prefix")):
        files = save_peft(peft_prompt(model_path, method, seed=5), tmp_path / method)
        for client in (rhttp, http):
            data, parts = upload(name, files)
            assert client.post("/v1/soft-prompts/import", data=data, files=parts).status_code == 201
        body = {
            "model": http.get("/v1/models").json()["data"][0]["id"],
            "prompt": "Colours:",
            "max_tokens": 8,
            "temperature": 0,
            "soft_prompt": name,
        }
        remote_out = rhttp.post("/v1/completions", json=body)
        assert remote_out.status_code == 200, remote_out.text
        assert (
            remote_out.json()["choices"][0]["text"]
            == http.post("/v1/completions", json=body).json()["choices"][0]["text"]
        )


def test_failover_when_a_replica_is_killed_under_streaming_load(
    fleet, remote, rhttp, model_name: str, fleet_settings: Settings, loop
) -> None:
    f, urls = fleet
    engine = _engine(remote)
    results: dict[int, object] = {}

    def stream(i: int) -> None:
        body = {
            "model": model_name,
            "messages": QUESTION,
            "max_tokens": 96,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
        }
        events, error = [], None
        try:
            with httpx.stream("POST", remote.url + "/v1/chat/completions", json=body, timeout=120) as resp:
                status = resp.status_code
                for line in resp.iter_lines():
                    if line.startswith("data: {"):
                        payload = json.loads(line[6:])
                        if "error" in payload:
                            error = payload["error"]
                        else:
                            events.append(payload)
        except httpx.HTTPError as exc:
            status = repr(exc)
        finish = [c["finish_reason"] for e in events for c in e.get("choices", []) if c.get("finish_reason")]
        results[i] = (status, finish, error)

    def plain(i: int) -> None:
        resp = httpx.post(
            remote.url + "/v1/chat/completions",
            timeout=120,
            json={
                "model": model_name,
                "messages": QUESTION,
                "max_tokens": 48,
                "temperature": 0,
                "ignore_eos": True,
            },
        )
        results[i] = (resp.status_code, None, None)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(8)]
    threads += [threading.Thread(target=plain, args=(i,)) for i in (8, 9)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while engine._by_url[urls[1]].outstanding < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    f.kill(urls[1])
    # it comes back at its address serving another window (booting while the streams finish)
    f.start("1", window=1024, port=int(urls[1].rsplit(":", 1)[1]))
    for t in threads:
        t.join(180)
    streams = [results[i] for i in range(8)]
    # every stream either finished or ended with an error event: none was cut silently
    assert all(s[0] == 200 for s in streams), streams
    assert all(s[1] == ["length"] or s[2] is not None for s in streams), streams
    broken = [s for s in streams if s[2] is not None]
    assert 0 < len(broken) <= 6, streams  # only the ones running on the killed replica
    assert all("failed while generating" in s[2]["message"] for s in broken)
    # non-streamed requests were run again on the survivor: no 5xx
    assert results[8][0] == results[9][0] == 200
    # afterwards every request succeeds on the survivor, and /health says who is down
    for _ in range(3):
        assert (
            rhttp.post(
                "/v1/chat/completions", json={"model": model_name, "messages": QUESTION, "max_tokens": 4}
            ).status_code
            == 200
        )
    health = rhttp.get("/health")
    assert health.status_code == 200
    states = {r["url"]: r["state"] for r in health.json()["engine"]["replicas"]}
    assert states[urls[0]] == "healthy" and states[urls[1]] in ("unhealthy", "mismatched"), states
    assert 'kind="interrupted"' in rhttp.get("/metrics").text

    # back with another window: the running Tailor's probe keeps it out, a new Tailor refuses the fleet
    _wait_healthy(urls[1], f.procs[urls[1]])
    replica = engine._by_url[urls[1]]
    deadline = time.monotonic() + 60
    while replica.state != "mismatched" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert replica.state == "mismatched", replica.describe()
    assert f"window 1024 instead of {WINDOW}" in replica.reason
    health = rhttp.get("/health")
    assert health.status_code == 200
    assert {r["url"]: r["state"] for r in health.json()["engine"]["replicas"]}[urls[1]] == "mismatched"
    fresh = RemoteEngine(
        fleet_settings.engine.model_copy(update={"backend": "remote", "servers": ",".join(urls)}),
        engine.model,
    )
    with pytest.raises(EngineStartError) as err:
        loop.run(fresh.start(), timeout=120)
    loop.run(fresh.stop(), timeout=30)
    assert err.value.permanent
    assert f"mismatched fleet: {urls[1]} serves window 1024 instead of {WINDOW}" in err.value.reason

    # the last healthy replica dies: not ready (503 with every replica's state), requests 503 with
    # the reason, and nothing restarts the fleet engine (it keeps probing)
    f.kill(urls[0])
    deadline = time.monotonic() + 30
    while rhttp.get("/health").status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    health = rhttp.get("/health")
    assert health.status_code == 503, health.text
    body = health.json()
    assert "no vLLM replica is healthy" in body["reason"]
    assert {r["url"]: r["state"] for r in body["engine"]["replicas"]} == {
        urls[0]: "unhealthy",
        urls[1]: "mismatched",
    }
    resp = rhttp.post(
        "/v1/chat/completions", json={"model": model_name, "messages": QUESTION, "max_tokens": 4}
    )
    assert resp.status_code == 503, resp.text
    assert _engine(remote) is engine  # the same engine object, still probing
