"""Training soft prompts through the OpenAI fine-tuning API (official SDK), and the training loop.

Each method learns the "MOO" behaviour of ``test_finetune`` on 8 examples and is called at once
by its ``fine_tuned_model`` name; a domain trains on its own ingested documents; unusable data and
settings of another method are refused before anything trains.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from tests.test_finetune import TOPICS, ask, moo_lines, upload, wait

HELD_OUT = ["Tell me something about dogs.", "Tell me something about snow."]


@pytest.fixture(scope="module")
def moo_file(oai: openai.OpenAI, tmp_path_factory) -> str:
    return upload(oai, tmp_path_factory.mktemp("moo"), moo_lines(TOPICS[:8])).id


@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning", "prefix_tuning"])
def test_each_method_trains_a_soft_prompt_callable_at_once(
    oai: openai.OpenAI, http: httpx.Client, model_name: str, moo_file: str, method: str
) -> None:
    assert not any("MOO" in ask(oai, model_name, q) for q in HELD_OUT)
    job = oai.fine_tuning.jobs.create(
        model=model_name,
        training_file=moo_file,
        suffix=f"moo {method}",
        seed=3,
        method={"type": method, method: {"hyperparameters": {"n_epochs": 10}}},
    )
    assert job.status in ("queued", "running")
    assert job.method.type == method
    job = wait(oai, job.id)
    assert job.status == "succeeded", job.error
    name = job.fine_tuned_model
    assert name.startswith(f"ft-moo-{method}-")
    hp = job.hyperparameters.model_dump()
    assert hp["num_virtual_tokens"] == 20 and hp["rank"] is None
    learned = [ask(oai, name, q) for q in HELD_OUT]
    assert all("MOO" in a for a in learned), learned
    assert not any("MOO" in ask(oai, model_name, q) for q in HELD_OUT)  # the backbone is untouched
    prompt = http.get(f"/v1/soft-prompts/{name}").json()
    assert prompt["method"] == method and prompt["source"] == "fine-tune"
    assert prompt["fine_tuning_job"] == job.id
    assert {m.id: m for m in oai.models.list().data}[name].kind == "soft_prompt"
    events = [e.message for e in oai.fine_tuning.jobs.list_events(job.id, limit=200).data]
    assert events[0] == "The job has successfully completed"
    assert any(m.startswith("Epoch 10 done") for m in events)


def test_a_domain_trains_on_its_own_documents(oai: openai.OpenAI, http: httpx.Client) -> None:
    text = (
        "Harbour regulations. Vessels entering the harbour of Port Vell must reduce speed to five knots. "
        "Mooring lines are inspected every morning by the harbour master. "
    ) * 6
    resp = http.post(
        "/v1/domains/harbour/documents",
        files=[("files", ("rules.txt", text.encode()))],
        params={"wait": True},
    )
    assert resp.status_code in (200, 201), resp.text
    hp = {"n_epochs": 2, "num_virtual_tokens": 4}
    body = {"model": "harbour", "method": {"type": "prompt_tuning", "prompt_tuning": {"hyperparameters": hp}}}
    resp = http.post("/v1/fine_tuning/jobs", json=body)  # no training_file: the domain's documents
    assert resp.status_code == 200, resp.text
    assert resp.json()["training_file"] == "documents:harbour"
    job = wait(oai, resp.json()["id"])
    assert job.status == "succeeded", job.error
    prompt = http.get(f"/v1/soft-prompts/{job.fine_tuned_model}").json()
    assert prompt["domain"] == "harbour" and prompt["num_virtual_tokens"] == 4
    # init from text: the domain has no description, so sampled vocabulary
    assert prompt["config"]["init"] == "vocab"
    answer = oai.chat.completions.create(
        model=job.fine_tuned_model, messages=[{"role": "user", "content": "What speed?"}], max_tokens=8
    )
    assert answer.choices[0].message.content


def test_unusable_jobs_are_refused_before_training(
    oai: openai.OpenAI, http: httpx.Client, model_name: str, moo_file: str, tmp_path: Path
) -> None:
    def create(**kw) -> httpx.Response:
        return http.post("/v1/fine_tuning/jobs", json={"model": model_name, "training_file": moo_file} | kw)

    def method(kind: str, **hp) -> dict:
        return {"method": {"type": kind, kind: {"hyperparameters": hp}}}

    cases = [
        (create(**method("prompt_tuning", rank=8)), "hyperparameters.rank"),
        (create(**method("p_tuning", init_text="hello")), "hyperparameters.init_text"),
        (create(**method("lora", num_virtual_tokens=8)), "hyperparameters.num_virtual_tokens"),
        (create(**method("prompt_tuning", init="text")), "hyperparameters.init_text"),
        (create(**method("prefix_tuning", num_virtual_tokens=9000)), None),
        (
            http.post("/v1/fine_tuning/jobs", json={"model": model_name, **method("prompt_tuning")}),
            "training_file",
        ),
        (create(method={"type": "soft_prompting"}), "method.type"),
    ]
    for resp, param in cases:
        assert 400 <= resp.status_code < 500, resp.text
        if param:
            assert resp.json()["error"]["param"] == param, resp.text
    # a domain without documents has nothing to train on
    assert http.put("/v1/domains/empty-room", json={}).status_code in (200, 201)
    resp = http.post("/v1/fine_tuning/jobs", json={"model": "empty-room", **method("p_tuning")})
    assert resp.status_code == 400 and "no ingested text" in resp.json()["error"]["message"]
    # an example longer than the window once the virtual tokens are added
    long = upload(oai, tmp_path, '{"prompt": "' + "word " * 1900 + '", "completion": "x"}\n', "long.jsonl")
    resp = create(training_file=long.id, **method("prompt_tuning", num_virtual_tokens=500))
    assert resp.status_code == 400, resp.text


def test_the_loop_stops_early_and_keeps_the_best_epoch(model_path: str) -> None:
    """Validation answers contradict the training answers: validation loss rises once training
    fits, so the loop stops and restores the weights of its best epoch."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from app.finetune.loop import LoopSettings, evaluate, train_loop
    from soft_prompts import config_from_dict
    from soft_prompts.peft import build_model

    tok = AutoTokenizer.from_pretrained(model_path)

    def ex(q: str, a: str) -> dict:
        return {"prompt_ids": tok(q)["input_ids"], "answer_ids": tok(a)["input_ids"]}

    train = [ex(f"Animal number {i}:", " zebra") for i in range(8)]
    valid = [ex(f"Animal number {i}:", " lion") for i in range(8, 12)]
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model = build_model(
        base, config_from_dict({"method": "prompt_tuning", "num_virtual_tokens": 4}), model_path
    )
    events: list[tuple[str, dict]] = []
    result = train_loop(
        model,
        train,
        valid,
        tok.pad_token_id,
        LoopSettings(epochs=8, batch_size=4, learning_rate=0.1, patience=1),
        lambda kind, **f: events.append((kind, f)),
    )
    assert result.stopped_early and result.epochs_run < 8
    assert result.best_epoch is not None and result.best_epoch < result.epochs_run
    assert [k for k, _ in events].count("epoch") == result.epochs_run and events[-1][0] == "stopped"
    restored = evaluate(model, valid, 4, tok.pad_token_id, "cpu")
    assert abs(restored - result.best_valid_loss) < 1e-3
