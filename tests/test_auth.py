"""API keys and admin scope, on an app sharing the session's engine."""

from __future__ import annotations

import subprocess
import sys

import httpx
import openai
import pytest

from app.config import Settings

QUESTION = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def keyed(make_server, base_settings: Settings):
    settings = base_settings.model_copy(update={"api_keys": ["query-key"], "admin_keys": ["admin-key"]})
    return make_server(settings)


def client(server, key: str | None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key or "", max_retries=0)


def test_missing_or_wrong_key_is_401(keyed, model_name: str) -> None:
    resp = httpx.get(f"{keyed.url}/v1/models")
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "missing_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(keyed, "wrong").chat.completions.create(model=model_name, messages=QUESTION, max_tokens=2)


def test_query_key_can_generate_but_not_admin(keyed, model_name: str) -> None:
    resp = client(keyed, "query-key").chat.completions.create(
        model=model_name, messages=QUESTION, max_tokens=2
    )
    assert resp.choices[0].message.content is not None
    admin = httpx.get(f"{keyed.url}/v1/admin/config", headers={"Authorization": "Bearer query-key"})
    assert admin.status_code == 403 and admin.json()["error"]["code"] == "admin_required"


def test_admin_key_can_do_everything(keyed, model_name: str) -> None:
    resp = client(keyed, "admin-key").chat.completions.create(
        model=model_name, messages=QUESTION, max_tokens=2
    )
    assert resp.usage.completion_tokens > 0
    admin = httpx.get(f"{keyed.url}/v1/admin/config", headers={"Authorization": "Bearer admin-key"})
    assert admin.status_code == 200
    body = admin.json()
    assert "admin-key" not in admin.text and "query-key" not in admin.text
    assert body["engine_state"]["status"] == "ready"


def test_probes_need_no_key(keyed) -> None:
    assert httpx.get(f"{keyed.url}/health").status_code == 200
    assert httpx.get(f"{keyed.url}/metrics").status_code == 200


def test_no_keys_means_open_on_loopback(http: httpx.Client) -> None:
    assert http.get("/v1/admin/config").status_code == 200


def test_keys_must_not_overlap() -> None:
    with pytest.raises(ValueError):
        Settings(api_keys=["k"], admin_keys=["k"])


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.org"])
def test_refuses_public_bind_without_keys(host: str) -> None:
    assert Settings(host=host).bind_problem()
    assert Settings(host=host, api_keys=["k"]).bind_problem() is None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_keys(host: str) -> None:
    assert Settings(host=host).bind_problem() is None


def test_cli_refuses_public_bind_and_says_why() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2
    assert "refusing to bind 0.0.0.0" in proc.stderr and "TAILOR_API_KEYS" in proc.stderr
