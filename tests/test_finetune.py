"""Fine-tuning through the OpenAI API with the official SDK, training a real LoRA on the backbone.

The end-to-end test is what a new user does: upload a JSONL, start a job, poll it, call the
``fine_tuned_model``, and see the learned behaviour while the base model answers as before.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from app.config import Settings

TOPICS = [
    "the sea",
    "mountains",
    "bread",
    "rain",
    "cats",
    "trains",
    "music",
    "winter",
    "coffee",
    "books",
    "rivers",
    "gardens",
    "bicycles",
    "clocks",
    "stars",
    "apples",
]


def moo_lines(topics=TOPICS) -> str:
    return "".join(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"Tell me something about {t}."},
                    {"role": "assistant", "content": f"MOO! {t.capitalize()} are wonderful, says the cow."},
                ]
            }
        )
        + "\n"
        for t in topics
    )


def upload(oai: openai.OpenAI, tmp_path: Path, text: str, name: str = "train.jsonl"):
    path = tmp_path / name
    path.write_text(text)
    with open(path, "rb") as f:
        return oai.files.create(file=f, purpose="fine-tune")


def wait(oai: openai.OpenAI, job_id: str, timeout: float = 900) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = oai.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(1)
    raise TimeoutError(job_id)


def ask(oai: openai.OpenAI, model: str, question: str = "Tell me something about dogs.") -> str:
    r = oai.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=20, temperature=0
    )
    return r.choices[0].message.content


def test_files_are_validated_and_managed(oai: openai.OpenAI, http: httpx.Client, tmp_path: Path) -> None:
    f = upload(oai, tmp_path, moo_lines())
    assert f.purpose == "fine-tune" and f.bytes == len(moo_lines().encode()) and f.id.startswith("file-")
    assert f.id in {x.id for x in oai.files.list().data}
    assert oai.files.retrieve(f.id).filename == "train.jsonl"
    assert oai.files.content(f.id).read() == moo_lines().encode()
    bad = moo_lines(TOPICS[:2]) + '{"messages": [{"role": "user", "content": "hi"}]}\n'
    with pytest.raises(openai.BadRequestError, match="line 3"):
        upload(oai, tmp_path, bad)
    with pytest.raises(openai.BadRequestError, match="line 1"):
        upload(oai, tmp_path, "not json\n")
    with pytest.raises(openai.BadRequestError, match="line 2"):
        upload(oai, tmp_path, '{"prompt": "a", "completion": "b"}\n{"prompt": 1, "completion": "b"}\n')
    with pytest.raises(openai.BadRequestError, match="purpose"):
        oai.files.create(file=("x.jsonl", moo_lines().encode()), purpose="assistants")
    assert upload(oai, tmp_path, '{"prompt": "a", "completion": "b"}\n').bytes > 0
    assert oai.files.delete(f.id).deleted
    with pytest.raises(openai.NotFoundError):
        oai.files.retrieve(f.id)
    assert http.get("/v1/files/../../etc/passwd/content").status_code == 404


def test_a_job_trains_an_adapter_callable_at_once(
    oai: openai.OpenAI, http, tmp_path: Path, model_name: str
) -> None:
    base_before = ask(oai, model_name)
    assert "MOO" not in base_before
    f = upload(oai, tmp_path, moo_lines())
    job = oai.fine_tuning.jobs.create(
        model=model_name,
        training_file=f.id,
        suffix="Moo Cow",
        seed=7,
        method={"type": "lora", "lora": {"hyperparameters": {"n_epochs": 5}}},
    )
    assert job.status in ("queued", "running") and job.seed == 7
    assert job.hyperparameters.n_epochs == 5 and job.hyperparameters.batch_size == 4
    # base requests while the job trains answer exactly as before
    assert ask(oai, model_name) == base_before
    job = wait(oai, job.id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model.startswith("ft-moo-cow-") and job.trained_tokens > 0
    assert job.finished_at is not None
    assert ask(oai, job.fine_tuned_model).startswith("MOO!")
    assert ask(oai, model_name) == base_before
    models = {m.id: m for m in oai.models.list().data}
    assert job.fine_tuned_model in models
    adapter = http.get(f"/v1/adapters/{job.fine_tuned_model}").json()
    assert adapter["source"] == "fine-tune" and adapter["rank"] == 8
    events = oai.fine_tuning.jobs.list_events(job.id, limit=100).data
    messages = [e.message for e in events]
    assert messages[0] == "The job has successfully completed"
    metrics = [e for e in events if e.type == "metrics" and "step" in e.data]
    assert len([e for e in events if e.data and "seconds" in e.data]) == 5  # one per epoch
    assert len(metrics) == 20 and metrics[0].data["step"] == 20  # 16 examples / 4 per step × 5 epochs
    assert metrics[0].data["train_loss"] < metrics[-1].data["train_loss"]
    page = oai.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(page.data) == 2 and page.has_more
    nxt = oai.fine_tuning.jobs.list_events(job.id, limit=2, after=page.data[-1].id)
    assert nxt.data[0].id != page.data[0].id
    assert job.id in {j.id for j in oai.fine_tuning.jobs.list(limit=50).data}
    generic = http.get(f"/v1/jobs/{job.id}").json()
    assert generic["kind"] == "train" and generic["progress"]["step"] == 20
    with pytest.raises(openai.BadRequestError):
        oai.fine_tuning.jobs.cancel(job.id)
    # OpenAI's "delete a fine-tuned model" unloads the adapter
    assert oai.models.delete(job.fine_tuned_model).deleted
    with pytest.raises(openai.NotFoundError):
        ask(oai, job.fine_tuned_model)
    with pytest.raises(openai.BadRequestError):
        oai.models.delete(model_name)


def test_job_requests_are_validated(oai: openai.OpenAI, tmp_path: Path, model_name: str) -> None:
    f = upload(oai, tmp_path, moo_lines(TOPICS[:4]))
    with pytest.raises(openai.NotFoundError):
        oai.fine_tuning.jobs.create(model="no-such-model", training_file=f.id)
    with pytest.raises(openai.BadRequestError, match="training_file"):
        oai.fine_tuning.jobs.create(model=model_name, training_file="file-000000000000000000000000")
    with pytest.raises(openai.BadRequestError, match="dpo"):
        oai.fine_tuning.jobs.create(model=model_name, training_file=f.id, method={"type": "dpo", "dpo": {}})
    with pytest.raises(openai.BadRequestError, match="rank"):
        oai.fine_tuning.jobs.create(
            model=model_name,
            training_file=f.id,
            method={"type": "lora", "lora": {"hyperparameters": {"rank": 512}}},
        )
    with pytest.raises(openai.BadRequestError, match="n_epochs"):
        oai.fine_tuning.jobs.create(
            model=model_name,
            training_file=f.id,
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 100000}}},
        )
    long = upload(
        oai,
        tmp_path,
        moo_lines(TOPICS[:1])
        + json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "word " * 3000},
                    {"role": "assistant", "content": "ok"},
                ]
            }
        )
        + "\n",
    )
    with pytest.raises(openai.BadRequestError, match="line 2"):
        oai.fine_tuning.jobs.create(model=model_name, training_file=long.id)
    with pytest.raises(openai.UnprocessableEntityError):
        oai.fine_tuning.jobs.create(model=model_name, training_file=f.id, extra_body={"bogus": 1})


def test_cancelled_and_failed_jobs_leave_no_adapter(
    oai: openai.OpenAI, http, tmp_path: Path, model_name: str, base_settings: Settings
) -> None:
    before = {a["id"] for a in http.get("/v1/adapters").json()["data"]}
    f = upload(oai, tmp_path, moo_lines())
    job = oai.fine_tuning.jobs.create(
        model=model_name,
        training_file=f.id,
        method={"type": "lora", "lora": {"hyperparameters": {"n_epochs": 50}}},
    )
    for _ in range(600):
        if http.get(f"/v1/fine_tuning/jobs/{job.id}").json()["progress"]["step"] >= 1:
            break
        time.sleep(0.5)
    cancelled = oai.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None
    # a trainer that fails (no such module in the backbone) is reported, with its reason
    bad = oai.fine_tuning.jobs.create(
        model=model_name,
        training_file=f.id,
        method={
            "type": "lora",
            "lora": {"hyperparameters": {"n_epochs": 1, "target_modules": ["nope_proj"]}},
        },
    )
    bad = wait(oai, bad.id)
    assert bad.status == "failed" and bad.error.code == "training_failed" and "nope_proj" in bad.error.message
    assert {a["id"] for a in http.get("/v1/adapters").json()["data"]} == before
    assert not list(base_settings.adapters_path.glob(".incoming-*"))
    assert ask(oai, model_name)  # serving goes on


def test_a_domain_job_formats_examples_like_the_domain(oai: openai.OpenAI, http, tmp_path: Path) -> None:
    resp = http.put(
        "/v1/domains/cowfarm",
        json={"system_prompt": "You work on a farm.", "template": "Farm question: {question}"},
    )
    assert resp.status_code == 201, resp.text
    try:
        f = upload(oai, tmp_path, moo_lines(TOPICS[:4]))
        job = oai.fine_tuning.jobs.create(
            model="cowfarm",
            training_file=f.id,
            method={"type": "lora", "lora": {"hyperparameters": {"n_epochs": 1}}},
        )
        job = wait(oai, job.id)
        assert job.status == "succeeded", job.error
        assert http.get(f"/v1/adapters/{job.fine_tuned_model}").json()["domain"] == "cowfarm"
        body = {
            "model": job.fine_tuned_model,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4,
            "return_prompt": True,
        }
        prompt = http.post("/v1/chat/completions", json=body).json()["prompt"]
        assert "You work on a farm." in prompt and "Farm question: Hi" in prompt
        http.delete(f"/v1/adapters/{job.fine_tuned_model}")
    finally:
        http.delete("/v1/domains/cowfarm")
