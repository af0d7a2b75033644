"""Soft prompts on the real engine: import, parity with PEFT, isolation, prefix cache, domains, errors.

Prompt tuning and P-tuning go through vLLM's prompt embeddings; prefix tuning through the
transformers path beside it. Every served output is compared with PEFT's own greedy output for
the same prompt (fp32), and mixed concurrent batches with the same requests run alone.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import openai
import pytest

from app.config import Settings
from soft_prompts import SoftPrompt, SoftPromptError, config_from_dict, fingerprint_of, load, save
from tests.lora import make_adapter
from tests.soft import peft_greedy, peft_prompt, save_peft, upload

TEXTS = ["The capital of France is", "def fibonacci(n):", "Three colours of the rainbow are"]
METHODS = ("prompt_tuning", "p_tuning", "prefix_tuning")


@pytest.fixture(scope="session")
def tokenizer(model_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


@pytest.fixture(scope="session")
def peft_models(model_path: str) -> dict:
    """sp-a / sp-b: two prompt-tuning prompts of one length; sp-p: P-tuning (LSTM-free MLP); sp-x: prefix."""
    return {
        "sp-a": peft_prompt(model_path, "prompt_tuning", seed=11),
        "sp-b": peft_prompt(model_path, "prompt_tuning", seed=12),
        "sp-p": peft_prompt(model_path, "p_tuning", seed=13),
        "sp-x": peft_prompt(model_path, "prefix_tuning", seed=14),
    }


@pytest.fixture(scope="session")
def imported(http: httpx.Client, peft_models: dict, tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("peft-prompts")
    for name, model in peft_models.items():
        data, files = upload(name, save_peft(model, root / name))
        resp = http.post("/v1/soft-prompts/import", data=data, files=files)
        assert resp.status_code == 201, resp.text
    return list(peft_models)


@pytest.fixture(scope="session")
def references(peft_models: dict, tokenizer) -> dict[tuple[str, str], str]:
    return {
        (name, text): peft_greedy(m, tokenizer, text) for name, m in peft_models.items() for text in TEXTS
    }


def complete(oai: openai.OpenAI, model: str, text: str, **extra) -> str:
    resp = oai.completions.create(model=model, prompt=text, max_tokens=16, temperature=0, **extra)
    return resp.choices[0].text


# -- the library --------------------------------------------------------------------------------------
def test_configs_round_trip_and_reject_bad_values() -> None:
    for data in (
        {"method": "prompt_tuning", "num_virtual_tokens": 7, "init": "text", "init_text": "contracts"},
        {"method": "p_tuning", "encoder": "lstm", "encoder_hidden_size": 32},
        {"method": "prefix_tuning", "projection": False},
    ):
        config = config_from_dict(data)
        assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config
    for bad in (
        {"method": "prompt_tuning", "init": "text"},
        {"method": "p_tuning", "encoder": "gru"},
        {"method": "prefix_tuning", "num_virtual_tokens": 0},
        {"method": "lora"},
        {"method": "prompt_tuning", "rank": 8},
    ):
        with pytest.raises(ValueError):
            config_from_dict(bad)


def test_saved_prompts_load_equal_and_refuse_other_backbones(tmp_path: Path, model_path: str) -> None:
    import torch

    fp = fingerprint_of(model_path)
    prompt = SoftPrompt(
        config_from_dict({"method": "prompt_tuning", "num_virtual_tokens": 4}),
        torch.randn(4, fp.hidden_size),
        fp,
    )
    save(prompt, tmp_path / "p")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        "config.json",
        "fingerprint.json",
        "prompt.safetensors",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    again = load(tmp_path / "p", fp)
    assert torch.equal(again.tensor, prompt.tensor) and again.config == prompt.config
    other = type(fp)(**{**fp.to_dict(), "embedding_sha256": "0" * 64})
    with pytest.raises(SoftPromptError, match="embedding_sha256"):
        load(tmp_path / "p", other)
    bad = SoftPrompt(prompt.config, torch.full((4, fp.hidden_size), float("nan")), fp)
    with pytest.raises(SoftPromptError, match="NaN"):
        save(bad, tmp_path / "q")
    wrong = SoftPrompt(prompt.config, torch.randn(4, 7), fp)
    with pytest.raises(SoftPromptError, match="shape"):
        save(wrong, tmp_path / "q")
    assert not (tmp_path / "q").exists()


# -- import and serving -------------------------------------------------------------------------------
def test_imported_prompts_are_listed(http: httpx.Client, imported: list[str], model_name: str) -> None:
    listed = {p["id"]: p for p in http.get("/v1/soft-prompts").json()["data"]}
    assert set(imported) <= set(listed)
    assert listed["sp-a"]["method"] == "prompt_tuning" and listed["sp-a"]["served_by"] == "vllm"
    assert listed["sp-x"]["method"] == "prefix_tuning" and listed["sp-x"]["served_by"] == "transformers"
    assert listed["sp-p"]["num_virtual_tokens"] == 8
    models = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    assert models["sp-a"]["kind"] == "soft_prompt" and models["sp-a"]["parent"] == model_name
    assert http.get("/v1/soft-prompts/sp-b").json()["source"] == "import"


@pytest.mark.parametrize("name", ["sp-a", "sp-p", "sp-x"])
def test_greedy_output_equals_peft(oai: openai.OpenAI, imported, references, name: str) -> None:
    for text in TEXTS:
        assert complete(oai, name, text) == references[(name, text)], (name, text)


def test_prompts_change_the_output(oai: openai.OpenAI, imported, references, model_name: str) -> None:
    """The checks above could not fail if soft prompts changed nothing."""
    plain = [complete(oai, model_name, t) for t in TEXTS]
    for name in ("sp-a", "sp-p", "sp-x"):
        assert [references[(name, t)] for t in TEXTS] != plain, name
    assert [references[("sp-a", t)] for t in TEXTS] != [references[("sp-b", t)] for t in TEXTS]


def test_prefix_cache_never_hands_one_prompts_state_to_another(
    oai: openai.OpenAI, imported, references, model_name: str
) -> None:
    """sp-a and sp-b have the same length and the same text after them: identical token ids, so
    only the embeddings tell them apart. Each run, in any order, must give its own output."""
    text = TEXTS[2]
    plain = complete(oai, model_name, text)
    for name in ("sp-a", "sp-b", None, "sp-a", None, "sp-b", "sp-b", "sp-a"):
        got = (
            complete(oai, model_name, text, extra_body={"soft_prompt": name})
            if name
            else complete(oai, model_name, text)
        )
        assert got == (references[(name, text)] if name else plain), name


@pytest.fixture(scope="session")
def sp_lora(http: httpx.Client, model_path: str, base_settings: Settings) -> str:
    folder = make_adapter(model_path, base_settings.adapters_path / "src-sp-lora", seed=21)
    resp = http.post("/v1/adapters", json={"name": "sp-lora", "path": str(folder)})
    assert resp.status_code == 201, resp.text
    return "sp-lora"


def test_mixed_concurrent_batches_each_get_their_own_output(
    server, oai: openai.OpenAI, imported, references, model_name: str, sp_lora: str
) -> None:
    text = TEXTS[0]
    alone = {m: complete(oai, m, text) for m in ("sp-a", "sp-b", "sp-p", "sp-x", model_name, sp_lora)}
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)

    async def run() -> list[tuple[str, str]]:
        async def one(m: str) -> tuple[str, str]:
            r = await client.completions.create(model=m, prompt=text, max_tokens=16, temperature=0)
            return m, r.choices[0].text

        order = ["sp-a", model_name, "sp-b", "sp-x", sp_lora, "sp-p", model_name] * 4
        return await asyncio.gather(*(one(m) for m in order))

    results = asyncio.run(run())
    wrong = [(m, got) for m, got in results if got != alone[m]]
    assert not wrong, wrong
    assert alone["sp-a"] == references[("sp-a", text)]


def test_soft_prompt_composes_with_a_lora_adapter(
    oai: openai.OpenAI, imported, model_name: str, sp_lora
) -> None:
    text = TEXTS[1]
    both = complete(oai, "sp-a", text, extra_body={"adapter": "sp-lora"})
    assert both != complete(oai, "sp-a", text)
    assert both != complete(oai, "sp-lora", text)
    assert both == complete(oai, model_name, text, extra_body={"adapter": "sp-lora", "soft_prompt": "sp-a"})
    with pytest.raises(openai.BadRequestError) as err:
        complete(oai, "sp-x", text, extra_body={"adapter": "sp-lora"})
    assert err.value.body["code"] == "unsupported_combination"


def test_chat_and_streaming_with_a_soft_prompt(oai: openai.OpenAI, imported) -> None:
    messages = [{"role": "user", "content": "Name a fruit."}]
    for name in ("sp-a", "sp-x"):
        full = oai.chat.completions.create(model=name, messages=messages, max_tokens=12, temperature=0)
        stream = oai.chat.completions.create(
            model=name,
            messages=messages,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == full.choices[0].message.content, name
        usage = chunks[-1].usage
        assert usage.prompt_tokens == full.usage.prompt_tokens  # virtual tokens count as prompt
        assert usage.completion_tokens == full.usage.completion_tokens
        long = oai.chat.completions.create(
            model=name, messages=messages, max_tokens=40, temperature=0, extra_body={"ignore_eos": True}
        )
        assert long.usage.completion_tokens == 40 and long.choices[0].finish_reason == "length", name


def test_virtual_tokens_take_window_positions(
    oai: openai.OpenAI, imported, model_name: str, tokenizer
) -> None:
    plain = oai.completions.create(model=model_name, prompt=TEXTS[0], max_tokens=1, temperature=0)
    soft = oai.completions.create(model="sp-a", prompt=TEXTS[0], max_tokens=1, temperature=0)
    assert soft.usage.prompt_tokens == plain.usage.prompt_tokens + 8


# -- domains --------------------------------------------------------------------------------------------
def test_a_domains_soft_prompt_applies_per_request(
    http: httpx.Client, oai: openai.OpenAI, imported, server
) -> None:
    body = {"system_prompt": "You are brief.", "template": "{question}"}
    assert http.put("/v1/domains/sp-plain", json=body).status_code in (200, 201)
    assert http.put("/v1/domains/sp-tuned", json=body | {"soft_prompt": "sp-a"}).status_code in (200, 201)
    messages = [{"role": "user", "content": "Name three colours."}]

    def chat(model: str, **extra) -> str:
        r = oai.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0, **extra)
        return r.choices[0].message.content

    tuned, plain = chat("sp-tuned"), chat("sp-plain")
    assert tuned != plain
    assert tuned == chat("sp-plain", extra_body={"soft_prompt": "sp-a"})
    assert chat("sp-tuned", extra_body={"soft_prompt": "sp-b"}) == chat(
        "sp-plain", extra_body={"soft_prompt": "sp-b"}
    )
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)

    async def batch() -> list[tuple[str, str]]:
        async def one(m: str) -> tuple[str, str]:
            r = await client.chat.completions.create(model=m, messages=messages, max_tokens=16, temperature=0)
            return m, r.choices[0].message.content

        return await asyncio.gather(*(one(m) for m in ["sp-tuned", "sp-plain"] * 6))

    expected = {"sp-tuned": tuned, "sp-plain": plain}
    assert all(got == expected[m] for m, got in asyncio.run(batch()))


def test_domain_profiles_must_name_an_existing_soft_prompt(http: httpx.Client, imported) -> None:
    resp = http.put("/v1/domains/sp-missing", json={"soft_prompt": "nope"})
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "unknown_soft_prompt"
    resp = http.put("/v1/domains/sp-a", json={})
    assert resp.status_code == 409


# -- hostile and wrong input ----------------------------------------------------------------------------
def test_import_refuses_what_cannot_be_served(
    http: httpx.Client, peft_models: dict, tmp_path: Path, model_path: str
) -> None:
    import torch
    from safetensors.torch import save as st_save

    files = save_peft(peft_models["sp-a"], tmp_path / "a")

    def post(name: str, fs: dict[str, bytes]) -> httpx.Response:
        data, up = upload(name, fs)
        return http.post("/v1/soft-prompts/import", data=data, files=up)

    pickle = {"adapter_config.json": files["adapter_config.json"], "adapter_model.bin": b"\x80\x04not read"}
    assert post("sp-bad", pickle).status_code == 400
    wrong_shape = files | {"adapter_model.safetensors": st_save({"prompt_embeddings": torch.randn(8, 100)})}
    resp = post("sp-bad", wrong_shape)
    assert resp.status_code == 400 and "shape" in resp.json()["error"]["message"]
    nan = files | {
        "adapter_model.safetensors": st_save({"prompt_embeddings": torch.full((8, 576), float("nan"))})
    }
    assert post("sp-bad", nan).status_code == 400
    lora_config = json.dumps({"peft_type": "LORA", "r": 8}).encode()
    assert post("sp-bad", files | {"adapter_config.json": lora_config}).status_code == 400
    other_layers = json.loads(files["adapter_config.json"]) | {"num_layers": 12}
    assert (
        post("sp-bad", files | {"adapter_config.json": json.dumps(other_layers).encode()}).status_code == 400
    )
    assert post("sp-bad", files | {"adapter_model.safetensors": b"garbage"}).status_code == 400
    assert post("../evil", files).status_code == 400
    assert http.get("/v1/soft-prompts/sp-bad").status_code == 404
    resp = post("sp-a", files)
    assert resp.status_code == 409


def test_unknown_soft_prompts_are_404(oai: openai.OpenAI, model_name: str, imported) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        complete(oai, model_name, "hi", extra_body={"soft_prompt": "nope"})
    assert err.value.body["code"] == "soft_prompt_not_found"


def test_delete_and_restart_keep_the_registry_consistent(
    http: httpx.Client, make_server, base_settings: Settings, peft_models: dict, tmp_path: Path, imported
) -> None:
    data, files = upload("sp-gone", save_peft(peft_models["sp-b"], tmp_path / "b"))
    assert http.post("/v1/soft-prompts/import", data=data, files=files).status_code == 201
    assert http.delete("/v1/models/sp-gone").json()["deleted"] is True
    assert http.get("/v1/soft-prompts/sp-gone").status_code == 404
    assert not (base_settings.soft_prompts_path / "sp-gone").exists()
    # a restart: the first app stops (its data dir with it), the next one over the same dir serves
    # what was saved and sets a corrupted folder aside
    settings = base_settings.model_copy(update={"data_dir": tmp_path / "data"})
    first = make_server(settings)
    data, files = upload("sp-kept", save_peft(peft_models["sp-b"], tmp_path / "kept"))
    with httpx.Client(base_url=first.url, timeout=60) as c:
        assert c.post("/v1/soft-prompts/import", data=data, files=files).status_code == 201
    first.stop()
    broken = settings.soft_prompts_path / "sp-broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    again = make_server(settings)
    assert again.data_dir == settings.data_dir
    with httpx.Client(base_url=again.url, timeout=60) as c:
        listing = c.get("/v1/soft-prompts").json()
    assert {p["id"] for p in listing["data"]} == {"sp-kept"}
    assert any("sp-broken" in w for w in listing["warnings"])
    assert not broken.exists()
