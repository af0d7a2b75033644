"""AdaLoRA, LoHa, LoKr and IA3: trained through the official SDK, served by vLLM as converted LoRAs.

Each method is trained briefly by a real job on the backbone, converted, loaded into the session's
vLLM engine and checked against PEFT's own model on the agreement prompts; the adapter object
reports its method, rank per module, fidelity and agreement. Imports through the adapters routes
convert too; a strongly perturbed LoHa under a rank cap of 1 is refused with the numbers, while
an equally perturbed AdaLoRA (exact) is served and decodes as PEFT does. (The fallback to PEFT
itself is the same path for imports and jobs: the trained IA3 takes it.)
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest
import torch

from tests.test_finetune import TOPICS, ask, moo_lines, upload, wait

METHODS = ("loha", "lokr", "adalora", "ia3")
#: Small and quick: two steps at a high learning rate, on the query and value projections only
HP = {"n_epochs": 2, "learning_rate_multiplier": 10}
EXTRA = {m: {"target_modules": ["q_proj", "v_proj"]} for m in ("loha", "lokr", "adalora")}


def _state(server):
    return server.server.config.app.state.tailor


def test_each_method_trains_through_the_sdk_and_is_served_as_a_lora(
    oai: openai.OpenAI, http: httpx.Client, tmp_path: Path, model_name: str
) -> None:
    f = upload(oai, tmp_path, moo_lines(TOPICS[:2]))  # one step of two examples per epoch
    jobs = {
        m: oai.fine_tuning.jobs.create(
            model=model_name,
            training_file=f.id,
            seed=3,
            suffix=m,
            method={"type": m, m: {"hyperparameters": HP | EXTRA.get(m, {})}},
        )
        for m in METHODS
    }
    assert jobs["adalora"].hyperparameters.init_rank == 12  # 1.5 × the default rank 8
    assert jobs["ia3"].hyperparameters.target_modules == ["k_proj", "v_proj", "down_proj"]
    seen = f"Tell me something about {TOPICS[0]}."  # a training prompt: where the adapter acts
    base = ask(oai, model_name, seen)
    for method, job in jobs.items():
        done = wait(oai, job.id)
        assert done.status == "succeeded", (method, done.error)
        adapter = http.get(f"/v1/adapters/{done.fine_tuned_model}").json()
        assert adapter["method"] == method and adapter["source"] == "fine-tune"
        c = adapter["conversion"]
        assert c["method"] == method and 1 <= c["rank"] <= 16 == c["max_rank"]
        assert adapter["rank"] == c["rank"]
        assert len(c["modules"]) == (90 if method == "ia3" else 60)  # 30 layers × targets
        assert all(1 <= m["rank"] <= c["rank"] for m in c["modules"].values())
        assert 0 < c["fidelity"] <= c["mean_fidelity"] <= 1
        assert c["exact"] is (method == "adalora") and (c["fidelity"] == 1.0 or method != "adalora")
        assert c["min_agreement"] == 0.95 and c["tokens_total"] == 4 * 12
        if method == "ia3":
            # IA3's delta (a scaled weight) is full rank: at rank 16 this hard-trained one keeps a
            # fraction of it, disagrees with PEFT, and is served by PEFT itself (the default fallback)
            assert c["capped_modules"] > 0 and c["agreement"] < 0.95
            assert adapter["served_by"] == c["served_by"] == "transformers"
        else:
            # LoHa and LoKr at rank 4 have rank ≤ 16 deltas; AdaLoRA is exact: vLLM serves them
            assert c["agreement"] >= 0.95 and adapter["served_by"] == c["served_by"] == "vllm"
            assert c["fidelity"] >= 0.999 and c["capped_modules"] == 0
        # the SDK's job object says it too (a Tailor field beside OpenAI's)
        assert done.model_extra["conversion"]["agreement"] == c["agreement"]
        assert done.model_extra["conversion"]["served_by"] == adapter["served_by"]
        events = [e.message for e in oai.fine_tuning.jobs.list_events(done.id, limit=100).data]
        assert any(m.startswith("Converted to a LoRA of rank") for m in events)
        assert any(m.startswith("Agreement with PEFT's own model") for m in events)
        # called by name like any model, and it learnt something
        if method != "adalora":  # AdaLoRA starts from zero singular values: two steps barely move it
            assert ask(oai, done.fine_tuned_model, seen) != base, method
    ia3 = wait(oai, jobs["ia3"].id).fine_tuned_model
    with pytest.raises(openai.BadRequestError, match="transformers path"):
        oai.chat.completions.create(
            model=ia3,
            messages=[{"role": "user", "content": "Say yes or no."}],
            max_tokens=4,
            extra_body={"structured_outputs": {"choice": ["yes", "no"]}},
        )
    # a converted adapter composes with a domain and structured output like a LoRA
    name = wait(oai, jobs["loha"].id).fine_tuned_model
    assert http.put("/v1/domains/loha-farm", json={"adapter": name, "description": "farm"}).status_code == 201
    try:
        r = oai.chat.completions.create(
            model="loha-farm",
            messages=[{"role": "user", "content": "Say yes or no."}],
            max_tokens=4,
            extra_body={"structured_outputs": {"choice": ["yes", "no"]}},
        )
        assert r.choices[0].message.content in ("yes", "no")
    finally:
        http.delete("/v1/domains/loha-farm")
    for job in jobs.values():
        oai.models.delete(wait(oai, job.id).fine_tuned_model)


def test_fine_tuning_validates_each_methods_hyperparameters(
    oai: openai.OpenAI, tmp_path: Path, model_name: str
) -> None:
    f = upload(oai, tmp_path, moo_lines(TOPICS[:4]))
    cases = [
        ("ia3", {"rank": 4}, "hyperparameters.rank"),
        ("ia3", {"feedforward_modules": ["up_proj"]}, "hyperparameters.feedforward_modules"),
        ("adalora", {"rank": 8, "init_rank": 4}, "hyperparameters.init_rank"),
        ("adalora", {"rank": 32}, "hyperparameters.rank"),
        ("lokr", {"decompose_factor": 0}, "hyperparameters.decompose_factor"),
        ("loha", {"init_rank": 4}, "hyperparameters.init_rank"),
        ("loha", {"num_virtual_tokens": 4}, "hyperparameters.num_virtual_tokens"),
    ]
    for method, hp, param in cases:
        with pytest.raises(openai.BadRequestError) as err:
            oai.fine_tuning.jobs.create(
                model=model_name, training_file=f.id, method={"type": method, method: {"hyperparameters": hp}}
            )
        assert err.value.body["param"] == param, (method, hp, err.value.body)


def _peft_folder(folder: Path, model_path: str, config, scale: float) -> Path:
    """A seeded PEFT adapter with large weights (outputs change a lot), saved as safetensors."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(11)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32), config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * (0.5 if "lora_E" in name else scale))
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder


def test_imports_convert_and_a_capped_conversion_is_refused_with_its_numbers(
    server, http: httpx.Client, model_name: str, model_path: str
) -> None:
    from peft import AdaLoraConfig, LoHaConfig

    state = _state(server)
    root = state.adapters.root
    targets = ["q_proj", "v_proj"]
    _peft_folder(root / "import-loha", model_path, LoHaConfig(r=4, alpha=4, target_modules=targets), 0.5)
    _peft_folder(
        root / "import-ada",
        model_path,
        AdaLoraConfig(init_r=6, target_r=4, lora_alpha=8, total_step=10, target_modules=targets),
        0.15,
    )
    state.settings.conversion.max_rank = 1
    state.settings.conversion.fallback = "refuse"
    try:
        refused = http.post("/v1/adapters", json={"name": "loha-capped", "path": "import-loha"})
        assert refused.status_code == 400, refused.text
        err = refused.json()["error"]
        assert err["code"] == "conversion_disagrees"
        assert "rank 1" in err["message"] and "greedy tokens" in err["message"] and "0.95" in err["message"]
        assert http.get("/v1/adapters/loha-capped").status_code == 404
        assert not list(root.glob(".incoming-*")) and not (root / "loha-capped").exists()
    finally:
        state.settings.conversion.max_rank = 0
        state.settings.conversion.fallback = "transformers"
    # the same AdaLoRA with the server's own cap: exact, and decodes as PEFT does
    loaded = http.post("/v1/adapters", json={"name": "ada-import", "path": "import-ada"})
    assert loaded.status_code == 201, loaded.text
    body = loaded.json()
    assert body["method"] == "adalora" and body["source"] == "import" and body["rank"] == 6
    assert body["conversion"]["fidelity"] == 1.0 and body["conversion"]["agreement"] >= 0.95
    assert (root / "ada-import" / "peft" / "adapter_config.json").is_file()
    assert json.loads((root / "ada-import" / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert (
        http.post(
            "/v1/chat/completions",
            json={"model": "ada-import", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
        ).status_code
        == 200
    )
    assert http.delete("/v1/adapters/ada-import").status_code == 200
    assert not (root / "ada-import").exists() and (root / "import-ada").is_dir()  # the client's folder stays
    # a pickle in a folder of another method is refused before any process reads it
    (root / "import-loha" / "adapter_model.bin").write_bytes(b"not read")
    (root / "import-loha" / "adapter_model.safetensors").unlink()
    bad = http.post("/v1/adapters", json={"name": "loha-pickle", "path": "import-loha"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "unsafe_weights"
