"""Start-up the way a user starts the server: ``tailor serve`` in a fresh process, cold imports.

A warm in-process engine never sees start-up races, so these tests launch real server processes:
several cold starts in a row (one beside CPU-bound processes) must each reach ``ready`` and
answer; a crash (kill -9 of the whole process group) in the middle of an ingest leaves the job
``interrupted`` and a store that re-submitting completes; a start that cannot succeed exits 1 with
its reason.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from bench.server import ServerProcess

ROOT = Path(__file__).resolve().parent.parent


def _burn() -> None:
    while True:
        pass


def server_process(data_dir: Path, model: str, log: Path, **env: str) -> ServerProcess:
    return ServerProcess(
        log,
        TAILOR_MODEL=model,
        TAILOR_DATA_DIR=str(data_dir),
        TAILOR_ENGINE__MAX_MODEL_LEN="2048",
        TAILOR_ENGINE__KV_CACHE_SPACE_GIB="1",
        **env,
    )


@pytest.fixture
def busy() -> Iterator[None]:
    burners = [mp.get_context("fork").Process(target=_burn, daemon=True) for _ in range(2)]
    for b in burners:
        b.start()
    yield
    for b in burners:
        b.kill()
        b.join()


def _ask(url: str) -> str:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    model = client.models.list().data[0].id
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=12
    )
    return reply.choices[0].message.content or ""


def _cold_start(tmp_path: Path, model_path: str, name: str) -> None:
    server = server_process(tmp_path / "data", model_path, tmp_path / f"{name}.log")
    try:
        server.wait_ready()
        assert "Paris" in _ask(server.url)
        # a second server on the same data dir is refused at once and leaves the first one alone
        second = server_process(tmp_path / "data", model_path, tmp_path / f"{name}-second.log")
        t0 = time.monotonic()
        assert second.proc.wait(60) == 1, second.tail()
        refused_after = time.monotonic() - t0
        data_dir = (tmp_path / "data").resolve()
        assert (
            f"tailor: cannot start: data dir {data_dir} is in use by pid {server.proc.pid}" in second.tail()
        )
        assert "model libraries imported" not in second.tail() and refused_after < 30
        assert "Paris" in _ask(server.url)
    finally:
        code = server.terminate()
        outlived = server.leftovers()  # also kills them, so a failure here leaks nothing
    # uvicorn shuts down gracefully, then re-raises the signal: "stopped by SIGTERM", as expected
    assert code == -signal.SIGTERM, server.tail()
    assert not outlived, "engine processes outlived the server"
    assert "Application shutdown complete" in server.tail()
    assert "ImportError" not in server.log.read_text(errors="replace")


def test_cold_start_beside_busy_processes_reaches_ready_and_holds_its_data_dir(
    tmp_path: Path, model_path: str, busy: None
) -> None:
    """The harder case of a cold start (two CPU-bound processes beside it); `make starts` counts 20,
    half of them quiet."""
    _cold_start(tmp_path, model_path, "busy")


def _documents(n: int) -> list[dict]:
    words = "statute clause tenant landlord notice payment arrears court appeal filing".split()
    return [
        {
            "id": f"memo-{i:04d}.txt",
            "text": "\n\n".join(
                f"Memo {i}, paragraph {p}: " + " ".join(words[(i + p + k) % len(words)] for k in range(120))
                for p in range(4)
            ),
        }
        for i in range(n)
    ]


def test_kill_9_mid_ingest_and_mid_training_leaves_both_consistent(tmp_path: Path, model_path: str) -> None:
    """kill -9 of the server alone while an ingest job and a training job both run (one cold
    restart checks both): the trainer stops by itself; the next start reports the ingest job
    interrupted with only whole documents kept (and resumable) and the training job failed
    (code ``interrupted``) with no adapter folder or entry left behind."""
    import os

    docs = _documents(80)
    rows = [
        {"messages": [{"role": "user", "content": f"Say hi {i}"}, {"role": "assistant", "content": "hi"}]}
        for i in range(32)
    ]
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    first = server_process(tmp_path / "data", model_path, tmp_path / "first.log")
    try:
        first.wait_ready()
        client = openai.OpenAI(base_url=f"{first.url}/v1", api_key="unused", max_retries=0, timeout=120)
        f = client.files.create(file=("train.jsonl", lines.encode()), purpose="fine-tune")
        base = client.models.list().data[0].id
        job = client.fine_tuning.jobs.create(
            model=base,
            training_file=f.id,
            method={"type": "lora", "lora": {"hyperparameters": {"n_epochs": 50}}},
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if httpx.get(f"{first.url}/v1/fine_tuning/jobs/{job.id}").json()["progress"]["step"] >= 1:
                break
            time.sleep(0.5)
        assert _trainers(), "the trainer process runs"
        resp = httpx.post(
            f"{first.url}/v1/domains/crash/documents",
            json={"documents": docs},
            params={"wait": False},
            timeout=120,
        )
        assert resp.status_code == 202, resp.text
        ingest_id = resp.json()["id"]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            ingest = httpx.get(f"{first.url}/v1/jobs/{ingest_id}").json()
            if ingest["progress"]["documents_done"] >= 30:
                break
            time.sleep(0.1)
        assert ingest["status"] == "running" and ingest["progress"]["documents_done"] < len(docs), ingest
        os.kill(first.proc.pid, signal.SIGKILL)  # the server alone, as the OOM killer would
        first.proc.wait(30)
        deadline = time.monotonic() + 30
        while _trainers() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _trainers(), "the trainer outlived its server"
    finally:
        first.leftovers(grace=5)

    second = server_process(tmp_path / "data", model_path, tmp_path / "second.log")
    try:
        second.wait_ready()
        client = openai.OpenAI(base_url=f"{second.url}/v1", api_key="unused", max_retries=0, timeout=120)
        again = client.fine_tuning.jobs.retrieve(job.id)
        assert (
            again.status == "failed" and again.error.code == "interrupted" and again.fine_tuned_model is None
        )
        assert httpx.get(f"{second.url}/v1/adapters").json()["data"] == []
        assert not list((tmp_path / "data" / "adapters").glob(".incoming-*"))
        ingest = httpx.get(f"{second.url}/v1/jobs/{ingest_id}").json()
        assert ingest["status"] == "interrupted" and "stopped" in ingest["error"]
        listed = httpx.get(f"{second.url}/v1/domains/crash/documents", params={"limit": 500}).json()
        kept = listed["total"]
        assert 0 < kept < len(docs)
        assert all(d["chunk_count"] > 0 for d in listed["data"])  # no half-written document
        hit = httpx.post(f"{second.url}/v1/domains/crash/search", json={"query": "Memo 3 paragraph 1"}).json()
        assert hit["data"], "the index answers after the crash"
        resp = httpx.post(
            f"{second.url}/v1/domains/crash/documents",
            json={"documents": docs},
            params={"wait": True},
            timeout=600,
        )
        assert resp.status_code == 201, resp.text
        statuses = [r["status"] for r in resp.json()["results"]]
        assert statuses.count("unchanged") == kept and statuses.count("created") == len(docs) - kept
        assert httpx.get(f"{second.url}/v1/domains/crash/documents").json()["total"] == len(docs)
    finally:
        code = second.terminate()
        outlived = second.leftovers()
    assert code == -signal.SIGTERM and not outlived, second.tail()


def test_bad_model_path_exits_with_the_reason(tmp_path: Path) -> None:
    server = server_process(tmp_path / "data", "/no/such/checkpoint", tmp_path / "bad.log")
    assert server.proc.wait(60) == 1
    assert "cannot start: model '/no/such/checkpoint' does not exist" in server.tail()


def test_checkpoint_the_engine_cannot_load_exits_with_the_reason(tmp_path: Path) -> None:
    broken = tmp_path / "broken-checkpoint"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    server = server_process(tmp_path / "data", str(broken), tmp_path / "broken.log")
    try:
        assert server.proc.wait(180) == 1, server.tail()
    finally:
        server.terminate()
        server.leftovers()
    log = server.tail()
    assert "tailor: cannot start:" in log and "retrying" not in log


def test_taken_port_exits_at_once_with_the_reason(tmp_path: Path, model_path: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = server_process(tmp_path / "data", model_path, tmp_path / "port.log", TAILOR_PORT=str(port))
        assert server.proc.wait(60) == 1
    assert f"cannot start: cannot bind 127.0.0.1:{port}" in server.tail()
    assert "model libraries imported" not in server.tail()  # nothing was loaded first


def _trainers() -> list:
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        if "app.finetune.worker" in " ".join(p.info["cmdline"] or []):
            found.append(p)
    return found
