"""Bad and hostile input: clear OpenAI-shaped 4xx errors, nothing reaching the engine unvalidated."""

from __future__ import annotations

import socket
import time

import httpx
import openai
import pytest

from app.engine import Engine

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def assert_error(resp: httpx.Response, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if code is not None:
        assert err["code"] == code
    return err


def test_unknown_model_is_404(oai: openai.OpenAI, http: httpx.Client) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        oai.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert "gpt-4o" in str(exc.value)
    err = assert_error(
        http.post("/v1/completions", json={"model": "nope", "prompt": "x"}), 404, "model_not_found"
    )
    assert err["param"] == "model"


def test_prompt_longer_than_window_names_counts(http: httpx.Client, model_name: str, engine: Engine) -> None:
    window = engine.max_model_len
    ids = [28] * (window + 10)
    err = assert_error(
        http.post("/v1/completions", json={"model": model_name, "prompt": ids}),
        400,
        "context_length_exceeded",
    )
    assert str(window) in err["message"] and str(window + 10) in err["message"]
    long_text = "word " * (window + 50)
    err = assert_error(
        http.post(
            "/v1/chat/completions",
            json={"model": model_name, "messages": [{"role": "user", "content": long_text}]},
        ),
        400,
        "context_length_exceeded",
    )
    assert str(window) in err["message"]


def test_max_tokens_beyond_window_names_counts(oai: openai.OpenAI, model_name: str, engine: Engine) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        oai.chat.completions.create(model=model_name, messages=QUESTION, max_tokens=engine.max_model_len)
    message = str(exc.value)
    assert str(engine.max_model_len) in message and "prompt" in message
    with pytest.raises(openai.BadRequestError):
        oai.completions.create(model=model_name, prompt="hi", max_tokens=10**9)


def test_malformed_json_is_400(http: httpx.Client) -> None:
    resp = http.post(
        "/v1/chat/completions",
        content=b'{"model": "x", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert_error(resp, 400, "invalid_json")


@pytest.mark.parametrize(
    "body",
    [
        {"messages": QUESTION},  # no model
        {"model": "m", "messages": []},
        {"model": "m", "messages": "hello"},
        {"model": "m", "messages": [{"role": "wizard", "content": "hi"}]},
        {"model": "m", "messages": QUESTION, "temperature": "hot"},
        {"model": "m", "messages": QUESTION, "temperature": 5},
        {"model": "m", "messages": QUESTION, "max_tokens": 0},
        {"model": "m", "messages": QUESTION, "max_tokens": -5},
        {"model": "m", "messages": QUESTION, "n": 0},
        {"model": "m", "messages": QUESTION, "top_p": 0},
        {"model": "m", "messages": QUESTION, "stop": ["a"] * 20},
        {"model": "m", "messages": QUESTION, "seed": 2**70},
        {
            "model": "m",
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
        },
    ],
)
def test_wrong_types_are_422(http: httpx.Client, model_name: str, body: dict) -> None:
    if body.get("model") == "m":
        body = {**body, "model": model_name}
    assert_error(http.post("/v1/chat/completions", json=body), 422, "invalid_value")


@pytest.mark.parametrize(
    "extra, code",
    [
        ({"n": 500}, "invalid_value"),
        ({"n": 2, "temperature": 0}, "invalid_value"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "unsupported_parameter"),
        ({"top_logprobs": 2}, "invalid_value"),
        ({"logit_bias": {"1": 5.0}}, "unsupported_parameter"),
        ({"min_tokens": 50, "max_tokens": 5}, "invalid_value"),
    ],
)
def test_unsupported_or_inconsistent_is_400(
    http: httpx.Client, model_name: str, extra: dict, code: str
) -> None:
    body = {"model": model_name, "messages": QUESTION, **extra}
    assert_error(http.post("/v1/chat/completions", json=body), 400, code)


def test_completion_edge_inputs(http: httpx.Client, model_name: str) -> None:
    assert_error(
        http.post("/v1/completions", json={"model": model_name, "prompt": [10**9]}), 400, "invalid_value"
    )
    assert_error(
        http.post("/v1/completions", json={"model": model_name, "prompt": [-1]}), 400, "invalid_value"
    )
    assert_error(http.post("/v1/completions", json={"model": model_name, "prompt": ""}), 400, "empty_prompt")
    assert_error(http.post("/v1/completions", json={"model": model_name, "prompt": {"a": 1}}), 422)


def test_oversized_body_is_413(http: httpx.Client, model_name: str, base_settings) -> None:
    big = "x" * (base_settings.max_body_bytes + 10)
    resp = http.post(
        "/v1/chat/completions", json={"model": model_name, "messages": [{"role": "user", "content": big}]}
    )
    assert_error(resp, 413, "body_too_large")

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(base_settings.max_body_bytes // 65536 + 2):
            yield b"x" * 65536

    resp = http.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert_error(resp, 413)


def test_unknown_route_and_method(http: httpx.Client) -> None:
    assert_error(http.get("/v1/nothing-here"), 404)
    assert_error(http.get("/v1/chat/completions"), 405)


def test_server_survives_abrupt_disconnect(
    server, http: httpx.Client, model_name: str, engine: Engine
) -> None:
    """A client that vanishes mid-stream frees its engine slot; the server keeps serving."""
    host, port = server.url.removeprefix("http://").split(":")
    body = (
        f'{{"model": "{model_name}", "stream": true, "max_tokens": 400, "ignore_eos": true, '
        '"messages": [{"role": "user", "content": "Tell a long story."}]}'
    ).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert b"200" in sock.recv(4096)
    deadline = time.monotonic() + 30  # a liveness bound, not a speed claim: 400 tokens take far longer
    while engine.stats().running_requests and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.stats().running_requests == 0
    resp = http.post(
        "/v1/chat/completions", json={"model": model_name, "messages": QUESTION, "max_tokens": 5}
    )
    assert resp.status_code == 200


def test_metrics_count_requests_and_tokens(http: httpx.Client, model_name: str) -> None:
    http.post("/v1/chat/completions", json={"model": model_name, "messages": QUESTION, "max_tokens": 3})
    text = http.get("/metrics").text
    assert 'tailor_requests_total{method="POST",route="/v1/chat/completions",status="200"}' in text
    assert "tailor_completion_tokens_total" in text and "tailor_prompt_tokens_total" in text
    assert "tailor_request_latency_seconds_bucket" in text
    assert "tailor_engine_requests" in text


def test_lone_surrogates_are_replaced_not_fatal(http: httpx.Client, model_name: str) -> None:
    """``"\\ud800"`` is valid JSON but no tokenizer takes it: every route gets a clean string."""
    raw = b'{"model": "%s", "messages": [{"role": "user", "content": "hi \\ud800 there"}], "max_tokens": 2}'
    resp = http.post(
        "/v1/chat/completions",
        content=raw % model_name.encode(),
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 200, resp.text
    docs = b'{"documents": [{"id": "s\\udc00", "text": "broken \\ud800 surrogate text"}]}'
    resp = http.post(
        "/v1/domains/surrogates/documents", content=docs, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 201 and resp.json()["results"][0]["id"] == "s\ufffd"
    search = http.post(
        "/v1/domains/surrogates/search",
        content=b'{"query": "broken \\ud800"}',
        headers={"content-type": "application/json"},
    )
    assert search.status_code == 200 and "\ufffd" in search.json()["data"][0]["text"]
