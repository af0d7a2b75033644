"""Failure paths: engine errors on both routes (streaming and not), the supervisor when starts
and restarts fail, fatal start-up failures. Faults are injected around the real engine
(``tests.fakes``); every successful request runs on the real model.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from app.config import Settings
from app.engine import Engine, EngineOverloaded, EngineUnavailable, InvalidEngineRequest
from app.engine.base import EngineStartError
from app.main import create_app
from tests.fakes import Script, ScriptedEngine
from tests.harness import Server, serve
from tests.lora import make_adapter

QUESTION = [{"role": "user", "content": "Tell me about Paris."}]


@pytest.fixture(scope="module")
def faulty(
    loop, engine: Engine, base_settings: Settings, tmp_path_factory
) -> Iterator[tuple[Server, Script]]:
    script = Script()
    scripted = ScriptedEngine(engine, script)
    scripted.alive = True
    settings = base_settings.model_copy(update={"data_dir": tmp_path_factory.mktemp("faulty")})
    server = serve(loop, create_app(settings, engine=scripted))
    yield server, script
    server.stop()


def _body(route: str, model: str, stream: bool) -> dict:
    body: dict = {"model": model, "max_tokens": 8, "ignore_eos": True, "stream": stream}
    if route == "/v1/chat/completions":
        body["messages"] = QUESTION
    else:
        body["prompt"] = "Paris is"
    return body


def _events(resp: httpx.Response) -> list:
    lines = [ln.removeprefix("data: ") for ln in resp.text.split("\n\n") if ln.startswith("data: ")]
    return [ln if ln == "[DONE]" else json.loads(ln) for ln in lines]


def _post_failing(faulty, route: str, body: dict, error: Exception, after: int) -> httpx.Response:
    """POST while the engine raises ``error`` after ``after`` outputs (0: before any)."""
    server, script = faulty
    script.generate_error, script.fail_after = error, after
    try:
        return httpx.post(f"{server.url}{route}", json=body, timeout=120)
    finally:
        script.generate_error = None


ERRORS = [
    (InvalidEngineRequest("the engine refused these parameters"), 400, "invalid_request"),
    (EngineOverloaded("the engine queue is full"), 429, "overloaded"),
    (EngineUnavailable("the engine went away"), 503, "engine_unavailable"),
    (RuntimeError("a bug deep in the engine"), 500, "engine_error"),
]


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("error, status, code", ERRORS, ids=[e[2] for e in ERRORS])
def test_engine_error_before_output_gets_its_status(
    faulty, model_name: str, route: str, stream: bool, error: Exception, status: int, code: str
) -> None:
    resp = _post_failing(faulty, route, _body(route, model_name, stream), error, after=0)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert err["code"] == code and set(err) == {"message", "type", "param", "code"}
    if status == 500:
        assert "deep in the engine" not in err["message"]  # internals stay in the log


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("error, status, code", ERRORS, ids=[e[2] for e in ERRORS])
def test_engine_error_mid_stream_is_an_error_event_then_done(
    faulty, model_name: str, route: str, error: Exception, status: int, code: str
) -> None:
    resp = _post_failing(faulty, route, _body(route, model_name, True), error, after=2)
    assert resp.status_code == 200  # headers were sent with the first tokens
    events = _events(resp)
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == code
    content = events[:-2]
    assert len(content) >= 2 and all("choices" in e for e in content)


def test_openai_client_sees_typed_errors(faulty, model_name: str) -> None:
    server, script = faulty
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)
    expected = [
        (EngineOverloaded("full"), openai.RateLimitError),
        (InvalidEngineRequest("bad"), openai.BadRequestError),
        (EngineUnavailable("gone"), openai.InternalServerError),
    ]
    for error, kind in expected:
        script.generate_error, script.fail_after = error, 0
        try:
            with pytest.raises(kind):
                client.chat.completions.create(model=model_name, messages=QUESTION, max_tokens=4)
            with pytest.raises(kind):
                client.completions.create(model=model_name, prompt="Paris", max_tokens=4, stream=True)
        finally:
            script.generate_error = None
    reply = client.chat.completions.create(model=model_name, messages=QUESTION, max_tokens=4)
    assert reply.usage.completion_tokens == 4 or reply.choices[0].finish_reason == "stop"


# -- the supervisor -------------------------------------------------------------------------------


def _poll(url: str, until, timeout: float = 120) -> tuple[dict, list[dict]]:
    """Poll /health until ``until(body)``; return the last body and every distinct one seen."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = httpx.get(f"{url}/health").json()
        if body not in seen:
            seen.append(body)
        if until(body):
            return body, seen
        time.sleep(0.05)
    raise AssertionError(f"/health never matched; saw {seen}")


def _supervised(loop, engine: Engine, settings: Settings, script: Script, fatal: list[str]):
    settings = settings.model_copy(update={"data_dir": Path(tempfile.mkdtemp(prefix="supervised-"))})
    made: list[ScriptedEngine] = []

    def make() -> ScriptedEngine:
        made.append(ScriptedEngine(engine, script))
        return made[-1]

    app = create_app(settings, make_engine=make, on_fatal=fatal.append)
    server = serve(loop, app)
    server.data_dir = settings.data_dir
    return server, made


def test_transient_start_failures_are_retried_and_restarts_retry_until_they_work(
    loop, engine: Engine, base_settings: Settings, model_name: str, model_path: str
) -> None:
    settings = base_settings.model_copy(
        update={
            "engine": base_settings.engine.model_copy(
                update={"start_attempts": 3, "retry_backoff_s": 1.5, "retry_backoff_max_s": 2.0}
            )
        }
    )
    script = Script(start_failures=[RuntimeError("Engine core initialization failed")])
    fatal: list[str] = []
    server, made = _supervised(loop, engine, settings, script, fatal)
    try:
        body, seen = _poll(server.url, lambda b: b["status"] == "ready")
        assert body["status"] == "ready" and body["model"] == model_name
        assert body["max_model_len"] == engine.max_model_len
        retried = [b for b in seen if b["status"] == "starting" and b.get("reason")]
        assert (
            retried
            and "attempt 1 failed: RuntimeError: Engine core initialization failed" in (retried[0]["reason"])
        )
        assert script.starts == 2 and not fatal
        make_adapter(model_path, server.data_dir / "adapters" / "kept", seed=5)
        loaded = httpx.post(f"{server.url}/v1/adapters", json={"name": "kept", "path": "kept"}, timeout=120)
        assert loaded.status_code == 201, loaded.text

        # the serving engine dies; its restarts fail more often than start_attempts allows at
        # start-up, yet a serving service keeps trying, with backoff, and recovers
        script.start_failures = [RuntimeError("still broken")] * 4
        made[-1].alive = False
        body, seen = _poll(server.url, lambda b: b["status"] == "ready", timeout=60)
        reasons = [b.get("reason") or "" for b in seen if b["status"] == "restarting"]
        assert any("stopped unexpectedly" in r for r in reasons)
        assert any("attempt 4 failed: RuntimeError: still broken" in r for r in reasons)
        assert script.starts == 2 + 5 and not fatal
        resp = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": model_name, "messages": QUESTION, "max_tokens": 3},
            timeout=120,
        )
        assert resp.status_code == 200 and resp.json()["usage"]["completion_tokens"] > 0
        # the restarted engine had the adapter registered explicitly before it served
        assert made[-1].added == ["kept"]
    finally:
        server.stop()


@pytest.mark.parametrize(
    "failures, reason",
    [
        ([EngineStartError("model '/x' does not exist", permanent=True)], "model '/x' does not exist"),
        ([MemoryError("cannot allocate the KV cache")], "MemoryError: cannot allocate the KV cache"),
        ([ValueError("max_model_len 99999 is larger than the model's 8192")], "max_model_len 99999"),
        ([ImportError("half imported")] * 2, "gave up after 2 attempts"),
    ],
    ids=["bad-model", "out-of-memory", "invalid-setting", "transient-exhausted"],
)
def test_a_start_that_cannot_succeed_is_fatal_with_its_reason(
    loop, engine: Engine, base_settings: Settings, failures: list, reason: str
) -> None:
    settings = base_settings.model_copy(
        update={
            "engine": base_settings.engine.model_copy(update={"start_attempts": 2, "retry_backoff_s": 0.1})
        }
    )
    script = Script(start_failures=list(failures))
    fatal: list[str] = []
    server, _ = _supervised(loop, engine, settings, script, fatal)
    try:
        body, _ = _poll(server.url, lambda b: b["status"] == "failed")
        assert reason in body["reason"]
        assert fatal == [body["reason"]] and script.starts == len(failures)
        models = httpx.get(f"{server.url}/v1/models")
        assert models.status_code == 503 and reason in models.json()["error"]["message"]
    finally:
        server.stop()
