"""Domain profiles over HTTP: CRUD and validation, per-request switching, budget, optimization."""

from __future__ import annotations

import concurrent.futures
import json

import httpx
import openai
import pytest

from app.config import Settings
from tests.harness import wait_job


def put(http: httpx.Client, name: str, **body) -> httpx.Response:
    return http.put(f"/v1/domains/{name}", json=body)


def test_shipped_profiles_are_listed_as_domains_and_models(http: httpx.Client, oai: openai.OpenAI) -> None:
    names = {d["name"] for d in http.get("/v1/domains").json()["data"]}
    assert {"legal", "medical", "finance"} <= names
    finance = http.get("/v1/domains/finance").json()
    assert finance["configured"] and finance["examples"] and "{question}" in finance["template"]
    assert {"legal", "medical", "finance"} <= {m.id for m in oai.models.list().data}


def test_profile_crud_and_versioning(http: httpx.Client, oai: openai.OpenAI) -> None:
    created = put(
        http, "telecom", system_prompt="You are a telecom support engineer.", template="Q: {question}"
    )
    assert created.status_code == 201 and created.json()["version"] == 1
    replaced = put(http, "telecom", system_prompt="You are a 5G network engineer.", template="Q: {question}")
    assert replaced.status_code == 200
    body = http.get("/v1/domains/telecom").json()
    assert body["version"] == 2 and body["system_prompt"] == "You are a 5G network engineer."
    assert body["updated_at"] >= body["created_at"]
    assert "telecom" in {m.id for m in oai.models.list().data}
    assert http.delete("/v1/domains/telecom").json()["deleted"] is True
    assert http.get("/v1/domains/telecom").status_code == 404
    assert http.delete("/v1/domains/telecom").status_code == 404
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="telecom", messages=[{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    "body, status",
    [
        ({"template": "{question.__class__.__mro__}"}, 422),
        ({"template": "{question[0]}"}, 422),
        ({"template": "no placeholder"}, 422),
        ({"template": "{question} {secret_file}"}, 422),
        ({"unknown": 1}, 422),
        ({"retrieval": {"top_k": 0}}, 422),
        ({"retrieval": {"mode": "magic"}}, 422),
        ({"generation": {"temperature": 9}}, 422),
        ({"examples": [{"input": "x"}]}, 422),
        ({"soft_prompt": "legal-v1"}, 422),
        ({"adapter": "legal-lora"}, 422),
    ],
)
def test_invalid_profiles_are_rejected(http: httpx.Client, body: dict, status: int) -> None:
    resp = put(http, "invalid", **body)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["message"]
    assert http.get("/v1/domains/invalid").status_code == 404


def test_bad_domain_names(http: httpx.Client) -> None:
    assert put(http, "Upper", template="{question}").status_code == 400
    # %2F decodes to '/', so no route matches: the router's 404, never a file outside the data dir
    resp = http.put("/v1/domains/a%2F..%2Fb", json={})
    assert resp.status_code == 404 and resp.json()["error"]["type"] == "not_found_error"


def test_profile_writes_need_admin(make_server, base_settings: Settings) -> None:
    keyed = make_server(base_settings.model_copy(update={"api_keys": ["q"], "admin_keys": ["a"]}))
    q, a = {"Authorization": "Bearer q"}, {"Authorization": "Bearer a"}
    assert httpx.put(f"{keyed.url}/v1/domains/x1", json={}, headers=q).status_code == 403
    assert (
        httpx.post(
            f"{keyed.url}/v1/domains/legal/optimize",
            json={"candidates": ["{question}"], "examples": [{"input": "a", "output": "b"}] * 4},
            headers=q,
        ).status_code
        == 403
    )
    assert httpx.get(f"{keyed.url}/v1/domains", headers=q).status_code == 200
    assert httpx.put(f"{keyed.url}/v1/domains/x1", json={}, headers=a).status_code == 201
    assert httpx.delete(f"{keyed.url}/v1/domains/x1", headers=q).status_code == 403


def test_concurrent_requests_get_their_own_profile(http: httpx.Client, oai: openai.OpenAI) -> None:
    put(
        http,
        "pirates",
        system_prompt="SYSTEM-PIRATES: talk like a pirate.",
        template="Ahoy! {question}",
        generation={"max_tokens": 4},
    )
    put(
        http,
        "poets",
        system_prompt="SYSTEM-POETS: answer in verse.",
        template="Verse please: {question}",
        generation={"max_tokens": 4},
    )

    def ask(i: int) -> tuple[str, str]:
        name = ("pirates", "poets")[i % 2]
        if i % 4 < 2:
            resp = oai.chat.completions.create(
                model=name,
                messages=[{"role": "user", "content": f"q{i}"}],
                extra_body={"return_prompt": True},
            )
        else:
            resp = oai.completions.create(model=name, prompt=f"q{i}", extra_body={"return_prompt": True})
        return name, resp.model_extra["prompt"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, range(16)))
    for i, (name, prompt) in enumerate(results):
        mine, other = ("Ahoy! ", "Verse please: ") if name == "pirates" else ("Verse please: ", "Ahoy! ")
        assert f"{mine}q{i}" in prompt and other not in prompt
        if i % 4 < 2:  # chat carries the system prompt; completions are the template alone
            assert ("SYSTEM-PIRATES" in prompt) == (name == "pirates") and ("SYSTEM-POETS" in prompt) == (
                name == "poets"
            )


def test_profile_generation_defaults_and_request_overrides(http: httpx.Client, oai: openai.OpenAI) -> None:
    put(http, "terse", template="{question}", generation={"max_tokens": 3, "temperature": 0})
    resp = oai.chat.completions.create(
        model="terse", messages=[{"role": "user", "content": "Tell me a long story."}]
    )
    assert resp.usage.completion_tokens <= 3
    longer = oai.chat.completions.create(
        model="terse",
        messages=[{"role": "user", "content": "Tell me a long story."}],
        max_tokens=12,
        extra_body={"ignore_eos": True},
    )
    assert longer.usage.completion_tokens == 12


def test_echo_and_return_prompt_show_the_exact_prompt(http: httpx.Client, oai: openai.OpenAI, engine) -> None:
    put(http, "echoer", template="Context: {context}\nQ: {question}\nA:", retrieval={"enabled": False})
    resp = oai.completions.create(
        model="echoer", prompt="What is 2+2?", max_tokens=3, echo=True, extra_body={"return_prompt": True}
    )
    prompt = resp.model_extra["prompt"]
    assert prompt == "Context: \nQ: What is 2+2?\nA:"
    assert resp.usage.prompt_tokens == len(engine.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert resp.choices[0].text.startswith("What is 2+2?")
    chat = oai.chat.completions.create(
        model="echoer",
        messages=[{"role": "user", "content": "What is 2+2?"}],
        max_tokens=3,
        extra_body={"return_prompt": True},
    )
    assert chat.model_extra["prompt"].endswith("Q: What is 2+2?\nA:<|im_end|>\n<|im_start|>assistant\n")
    assert chat.usage.prompt_tokens == len(
        engine.tokenizer(chat.model_extra["prompt"], add_special_tokens=False)["input_ids"]
    )


def test_context_budget_on_a_long_document_set(http: httpx.Client, oai: openai.OpenAI, engine) -> None:
    # two full-window prompts and up to 300 new tokens each: minutes on 2 busy cores, not 120 s
    oai = oai.with_options(timeout=600)
    docs = [
        {
            "id": f"clause-{i}",
            "text": f"Clause {i} on payment terms. "
            + f"The buyer shall pay invoice {i} within {i + 10} days of delivery. " * 30,
        }
        for i in range(12)
    ]
    assert (
        http.post(
            "/v1/domains/contracts/documents", json={"documents": docs}, params={"wait": "true"}
        ).status_code
        == 201
    )
    put(
        http,
        "contracts",
        system_prompt="SYSTEM-CONTRACTS",
        template="{context}\n\nQuestion: {question}",
        retrieval={"top_k": 12},
    )
    history = []
    for i in range(16):
        history += [
            {"role": "user", "content": f"Earlier question {i}: " + "tell me more " * 30},
            {"role": "assistant", "content": f"Earlier answer {i}."},
        ]
    resp = oai.chat.completions.create(
        model="contracts",
        messages=[*history, {"role": "user", "content": "When must the buyer pay invoice 3?"}],
        max_tokens=300,
        extra_body={"return_prompt": True},
    )
    ctx = resp.model_extra["context"]
    window = engine.max_model_len
    assert ctx["window"] == window and ctx["reserved_tokens"] == 300
    assert ctx["prompt_tokens"] == resp.usage.prompt_tokens and ctx["prompt_tokens"] + 300 <= window
    assert ctx["passages_dropped"] > 0 and ctx["passages_used"] == len(resp.model_extra["sources"])
    prompt = resp.model_extra["prompt"]
    assert "SYSTEM-CONTRACTS" in prompt and "When must the buyer pay invoice 3?" in prompt
    # with retrieval off the history is what has to give way
    resp = oai.chat.completions.create(
        model="contracts",
        messages=[*history * 3, {"role": "user", "content": "And invoice 4?"}],
        max_tokens=300,
        extra_body={"retrieval": {"enabled": False}, "return_prompt": True},
    )
    ctx = resp.model_extra["context"]
    assert (
        ctx["passages_used"] == 0 and ctx["history_turns_dropped"] > 0 and resp.model_extra["sources"] == []
    )
    assert "Earlier question 0:" not in resp.model_extra["prompt"].split("Earlier answer 15.")[-1]
    assert ctx["prompt_tokens"] + 300 <= window
    # request overrides of retrieval
    one = oai.chat.completions.create(
        model="contracts",
        messages=[{"role": "user", "content": "invoice 3"}],
        max_tokens=2,
        extra_body={"retrieval": {"top_k": 1}},
    )
    assert len(one.model_extra["sources"]) == 1
    filtered = oai.chat.completions.create(
        model="contracts",
        messages=[{"role": "user", "content": "invoice 3"}],
        max_tokens=2,
        extra_body={"retrieval": {"top_k": 3, "filter": {"document_id": "clause-7"}}},
    )
    assert {s["document_id"] for s in filtered.model_extra["sources"]} == {"clause-7"}
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(
            model="contracts",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"retrieval": {"filter": {"a": {"$bad": 1}}}},
        )
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(
            model="contracts", messages=[{"role": "user", "content": "x " * 3000}], max_tokens=100
        )


def test_optimization_picks_the_clearly_better_template(http: httpx.Client) -> None:
    put(
        http,
        "colors",
        system_prompt="Answer with one word.",
        template="{question}",
        retrieval={"enabled": False},
    )
    colors = ["red", "blue", "green"]
    examples = [
        {"input": f"Item {i}: the secret color is {colors[i % 3]}.", "output": colors[i % 3]}
        for i in range(18)
    ]
    good = "{question}\nWhat is the secret color?"
    misleading = "{question}\nForget it. The answer is always red. The answer is"
    resp = http.post(
        "/v1/domains/colors/optimize",
        json={"candidates": [misleading, good], "examples": examples, "apply": True, "holdout": 0.5},
    )
    assert resp.status_code == 202, resp.text
    job = wait_job(http, resp.json())
    assert job["status"] == "succeeded", job
    result = job["optimization"]
    assert result["metric"] == "label_loglik" and result["labels"] == ["blue", "green", "red"]
    assert result["heldout_size"] == 9 and result["train_size"] == 9
    scores = {s["index"]: s["score"] for s in result["scores"]}
    assert result["best"] == 1 and scores[1] > scores[0], result["scores"]
    assert result["applied"] and result["profile_version"] == 2
    assert http.get("/v1/domains/colors").json()["template"] == good
    assert job["progress"] == {"examples_total": 18, "examples_done": 18}


def test_optimize_validation(http: httpx.Client) -> None:
    ex = [{"input": "a", "output": "b"}] * 4
    assert (
        http.post(
            "/v1/domains/nowhere/optimize", json={"candidates": ["{question}"], "examples": ex}
        ).status_code
        == 404
    )
    assert (
        http.post("/v1/domains/legal/optimize", json={"candidates": ["{oops}"], "examples": ex}).status_code
        == 422
    )
    assert (
        http.post(
            "/v1/domains/legal/optimize", json={"candidates": ["{question}"], "examples": ex[:2]}
        ).status_code
        == 422
    )


def test_unreadable_profile_files_are_set_aside_not_fatal(
    make_server, base_settings: Settings, tmp_path
) -> None:
    from app.domains.store import ProfileStore
    from app.protocol.profiles import DomainProfileIn

    root = tmp_path / "data" / "domains"
    edited = (
        ProfileStore(root, seeds=None).put("good", DomainProfileIn(template="Q: {question}"))[0].model_dump()
    )
    (root / "garbled.json").write_bytes(b'{"name": "garbled", "templ\x00')
    (root / "edited.json").write_text(json.dumps({**edited, "name": "edited", "temperature_typo": 3}))
    server = make_server(base_settings.model_copy(update={"data_dir": tmp_path / "data"}))
    listed = httpx.get(f"{server.url}/v1/domains").json()
    names = {d["name"] for d in listed["data"]}
    assert "good" in names and not {"garbled", "edited"} & names
    assert len(listed["warnings"]) == 2
    assert any("garbled.json" in w for w in listed["warnings"])
    assert any("edited.json" in w and "temperature_typo" in w for w in listed["warnings"])
    aside = sorted(p.name.split(".json")[0] for p in (root / "set-aside").iterdir())
    assert aside == ["edited", "garbled"] and not (root / "garbled.json").exists()
    resp = httpx.put(f"{server.url}/v1/domains/garbled", json={"template": "{question}"})
    assert resp.status_code == 201
    warnings = httpx.get(f"{server.url}/v1/domains").json()["warnings"]
    assert len(warnings) == 1 and "edited.json" in warnings[0]
