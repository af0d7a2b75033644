"""Start-up states: /health is 503 until the engine serves, and reports a failed start."""

from __future__ import annotations

import time

import httpx

from app.config import Settings
from app.main import create_app
from tests.harness import serve


def test_health_503_while_starting_then_reports_failure(loop, base_settings: Settings, tmp_path) -> None:
    missing = tmp_path / "no-such-model"
    missing.mkdir()
    settings = base_settings.model_copy(update={"model": str(missing), "data_dir": tmp_path / "data"})
    server = serve(loop, create_app(settings))
    try:
        first = httpx.get(f"{server.url}/health")
        assert first.status_code == 503
        models = httpx.get(f"{server.url}/v1/models")
        assert models.status_code == 503 and models.json()["error"]["code"] == "engine_unavailable"
        deadline = time.monotonic() + 120
        body = first.json()
        while body["status"] == "starting" and time.monotonic() < deadline:
            time.sleep(0.2)
            body = httpx.get(f"{server.url}/health").json()
        assert body["status"] == "failed" and "without config.json" in body["reason"]
        assert httpx.get(f"{server.url}/health").status_code == 503
    finally:
        server.stop()


def test_health_ok_when_ready(http: httpx.Client, model_name: str, engine) -> None:  # noqa: ANN001
    resp = http.get("/health")
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "ready" and body["model"] == model_name
    # the window the engine enforces, unscaled here, and the KV cache it needs
    assert body["max_model_len"] == engine.max_model_len == body["window"]["max_model_len"]
    assert body["window"]["rope_scaling"] is None and body["window"]["native_max_model_len"] == 8192
    assert body["window"]["kv_cache"]["bytes_per_token"] == 46080


def test_engine_is_restarted_after_its_core_is_killed(
    loop, base_settings: Settings, model_path: str, tmp_path
) -> None:
    """A real fault: kill -9 the engine core process of an app-owned engine; the app recovers."""
    import os
    import signal

    import psutil

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    settings = base_settings.model_copy(update={"model": model_path, "data_dir": tmp_path / "data"})
    server = serve(loop, create_app(settings))
    try:

        def wait_health(status: int, timeout: float = 240) -> dict:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                resp = httpx.get(f"{server.url}/health")
                if resp.status_code == status:
                    return resp.json()
                time.sleep(0.3)
            raise AssertionError(f"health never became {status}")

        wait_health(200)
        mine = [p for p in me.children(recursive=True) if p.pid not in before]
        assert mine, "the app's engine started no processes"
        for p in mine:
            os.kill(p.pid, signal.SIGKILL)
        deadline = time.monotonic() + 60  # the supervisor notices within its 1 s interval
        body = httpx.get(f"{server.url}/health").json()
        while "stopped unexpectedly" not in (body.get("reason") or "") and time.monotonic() < deadline:
            time.sleep(0.1)
            body = httpx.get(f"{server.url}/health").json()
        assert body["status"] == "restarting" and "stopped unexpectedly" in body["reason"], body
        wait_health(200)
        model = httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"]
        resp = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3},
            timeout=120,
        )
        assert resp.status_code == 200 and resp.json()["usage"]["completion_tokens"] > 0
    finally:
        server.stop()
