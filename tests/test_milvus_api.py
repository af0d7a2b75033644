"""Knowledge stores on Milvus over HTTP: one Milvus Lite server started once, two Tailor processes.

Tailor A is the session's app (real engine) with ``TAILOR_KNOWLEDGE__BACKEND=milvus``; Tailor B is
a cold ``tailor serve`` process with its own data dir whose engine is a fleet that never answers
(the knowledge routes need no engine). Each sees what the other ingests and deletes; A answers
chat with sources from documents B ingested; a restarted A finds them; a stopped Milvus gives 503s
that name it, ``unavailable`` in /health, and the base model keeps answering.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from app.config import Settings
from bench.server import ServerProcess, free_port
from tests.indexers import files

DOMAIN = "mv-law"


class MilvusLite:
    """``python -m milvus_lite server`` on a free port, its data in ``data``."""

    def __init__(self, data: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "milvus_lite",
                "server",
                "--data-dir",
                str(data),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        from pymilvus import MilvusClient

        deadline = time.monotonic() + 60
        while True:
            try:
                # dedicated: a shared pymilvus channel from an earlier server would answer for it
                client = MilvusClient(self.uri, timeout=2, dedicated=True)
                client.list_collections(timeout=2)
                client.close()
                return
            except Exception:  # noqa: BLE001 - not listening yet
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("Milvus Lite server did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


@pytest.fixture(scope="module")
def milvus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusLite]:
    server = MilvusLite(tmp_path_factory.mktemp("milvus-data"))
    yield server
    server.stop()


def milvus_settings(base: Settings, uri: str) -> Settings:
    knowledge = base.knowledge.model_copy(update={"backend": "milvus", "milvus_uri": uri})
    return base.model_copy(update={"knowledge": knowledge})


@pytest.fixture(scope="module")
def tailor_b(milvus: MilvusLite, tmp_path_factory: pytest.TempPathFactory, model_path: str) -> Iterator[str]:
    root = tmp_path_factory.mktemp("tailor-b")
    proc = ServerProcess(
        root / "b.log",
        TAILOR_MODEL=model_path,
        TAILOR_DATA_DIR=str(root / "data"),
        TAILOR_ENGINE__BACKEND="remote",
        TAILOR_ENGINE__SERVERS=f"http://127.0.0.1:{free_port()}",  # nothing listens: B serves no chat
        TAILOR_KNOWLEDGE__BACKEND="milvus",
        TAILOR_KNOWLEDGE__MILVUS_URI=milvus.uri,
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{proc.url}/v1/domains/{DOMAIN}/documents", timeout=5).status_code in (200, 404):
                break
        except httpx.TransportError:
            pass
        assert proc.proc.poll() is None and time.monotonic() < deadline, proc.tail()
        time.sleep(0.3)
    yield proc.url
    proc.stop()


def test_two_tailors_share_documents_and_answer_with_sources(
    milvus: MilvusLite, tailor_b: str, make_server, base_settings: Settings
) -> None:
    a = make_server(milvus_settings(base_settings, milvus.uri))
    named = [
        (
            "lease.docx",
            files.docx("Office Lease", [("Rent", ["The monthly rent is 4,500 euros, due on the first."])]),
        ),
        ("agreement.pdf", files.pdf(["The supplier shall deliver the goods within ten business days."])),
    ]
    resp = httpx.post(
        f"{tailor_b}/v1/domains/{DOMAIN}/documents",
        files=[("files", f) for f in named],
        data={"metadata": '{"team": "legal"}'},
        timeout=120,
    )
    assert resp.status_code == 201, resp.text
    note = {
        "documents": [
            {"id": "note-1", "text": "Parking space 12 belongs to the tenant.", "metadata": {"team": "ops"}}
        ]
    }
    assert httpx.post(f"{a.url}/v1/domains/{DOMAIN}/documents", json=note, timeout=120).status_code == 201

    # each sees all three, whoever ingested them
    for url in (a.url, tailor_b):
        listed = httpx.get(f"{url}/v1/domains/{DOMAIN}/documents").json()
        assert {d["id"] for d in listed["data"]} == {"lease.docx", "agreement.pdf", "note-1"}, url
        assert listed["total"] == 3
    for mode in ("dense", "bm25", "hybrid"):
        hits = httpx.post(
            f"{a.url}/v1/domains/{DOMAIN}/search", json={"query": "monthly rent of the office", "mode": mode}
        ).json()["data"]
        assert hits[0]["document_id"] == "lease.docx", mode
    only_ops = httpx.post(
        f"{tailor_b}/v1/domains/{DOMAIN}/search", json={"query": "monthly rent", "filter": {"team": "ops"}}
    ).json()["data"]
    assert {h["document_id"] for h in only_ops} == {"note-1"}
    bad = httpx.post(
        f"{a.url}/v1/domains/{DOMAIN}/search", json={"query": "x", "filter": {"team": {"$regex": "."}}}
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_filter"

    # A answers from documents B ingested, with sources (the official client)
    oai = openai.OpenAI(base_url=f"{a.url}/v1", api_key="unused", max_retries=0, timeout=120)
    reply = oai.chat.completions.create(
        model=DOMAIN,
        messages=[{"role": "user", "content": "What is the monthly rent?"}],
        max_tokens=8,
        temperature=0,
    )
    assert any(s["document_id"] == "lease.docx" for s in reply.model_extra["sources"])

    # a delete through one is gone for the other
    assert httpx.delete(f"{a.url}/v1/domains/{DOMAIN}/documents/agreement.pdf").status_code == 200
    assert httpx.get(f"{tailor_b}/v1/domains/{DOMAIN}/documents/agreement.pdf").status_code == 404
    hits = httpx.post(
        f"{tailor_b}/v1/domains/{DOMAIN}/search", json={"query": "deliver goods supplier"}
    ).json()
    assert all(h["document_id"] != "agreement.pdf" for h in hits["data"])

    # a restarted A (same data dir, new process state) finds the documents in Milvus
    a.stop()
    again = make_server(
        milvus_settings(base_settings, milvus.uri).model_copy(update={"data_dir": a.data_dir})
    )
    listed = httpx.get(f"{again.url}/v1/domains/{DOMAIN}/documents").json()
    assert {d["id"] for d in listed["data"]} == {"lease.docx", "note-1"}
    health = httpx.get(f"{again.url}/health").json()
    assert health["knowledge"] == {"backend": "milvus", "uri": milvus.uri, "state": "ok"}
    assert DOMAIN in {m["id"] for m in httpx.get(f"{again.url}/v1/models").json()["data"]}


def test_milvus_down_gives_503_naming_it_and_the_base_model_still_answers(
    tmp_path: Path, make_server, base_settings: Settings, model_name: str
) -> None:
    store = MilvusLite(tmp_path / "m")
    settings = milvus_settings(base_settings, store.uri)
    settings = settings.model_copy(
        update={"knowledge": settings.knowledge.model_copy(update={"milvus_timeout_s": 3})}
    )
    app = make_server(settings)
    doc = {"documents": [{"id": "d", "text": "The warranty lasts two years."}]}
    assert httpx.post(f"{app.url}/v1/domains/down-law/documents", json=doc, timeout=120).status_code == 201
    store.stop()
    started = time.monotonic()
    search = httpx.post(f"{app.url}/v1/domains/down-law/search", json={"query": "warranty"}, timeout=60)
    assert search.status_code == 503, search.text
    assert (
        search.json()["error"]["code"] == "store_unavailable"
        and store.uri in search.json()["error"]["message"]
    )
    ingest = httpx.post(f"{app.url}/v1/domains/down-law/documents", json=doc, timeout=60)
    assert ingest.status_code == 503 and store.uri in ingest.json()["error"]["message"]
    oai = openai.OpenAI(base_url=f"{app.url}/v1", api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.APIStatusError) as err:
        oai.chat.completions.create(
            model="down-law", messages=[{"role": "user", "content": "warranty?"}], max_tokens=4
        )
    assert err.value.status_code == 503 and store.uri in str(err.value)
    base = oai.chat.completions.create(
        model=model_name, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert base.choices[0].message.content is not None
    listed = httpx.get(f"{app.url}/v1/domains", timeout=60)  # profiles still listed, counts unknown
    assert listed.status_code == 200 and {"down-law": None} == {
        d["name"]: d["knowledge"] for d in listed.json()["data"] if d["name"] == "down-law"
    }
    health = httpx.get(f"{app.url}/health", timeout=60)
    assert health.status_code == 200 and health.json()["knowledge"]["state"] == "unavailable"
    assert time.monotonic() - started < 60  # every answer came in bounded time, none hung

    # the same server back on its port: served again without restarting Tailor
    back = MilvusLite(tmp_path / "m", port=store.port)
    try:
        hits = httpx.post(f"{app.url}/v1/domains/down-law/search", json={"query": "warranty"}, timeout=60)
        assert hits.status_code == 200, hits.text
        assert hits.json()["data"][0]["document_id"] == "d"
        assert httpx.get(f"{app.url}/health").json()["knowledge"]["state"] == "ok"
    finally:
        back.stop()
