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
    server = serve(loop, create_app(base_settings.model_copy(update={"model": str(missing)})))
    try:
        first = httpx.get(f"{server.url}/health")
        assert first.status_code == 503
        models = httpx.get(f"{server.url}/v1/models")
        assert models.status_code == 503 and models.json()["error"]["code"] == "engine_unavailable"
        deadline = time.monotonic() + 120
        status = first.json()["status"]
        while status == "starting" and time.monotonic() < deadline:
            time.sleep(0.2)
            status = httpx.get(f"{server.url}/health").json()["status"]
        assert status.startswith("failed:")
        assert httpx.get(f"{server.url}/health").status_code == 503
    finally:
        server.stop()


def test_health_ok_when_ready(http: httpx.Client, model_name: str) -> None:
    resp = http.get("/health")
    assert resp.status_code == 200 and resp.json() == {"status": "ok", "model": model_name}
