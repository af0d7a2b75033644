"""Knowledge store over HTTP: ingest many formats, jobs, list/get/delete, search, RAG with sources."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from app.config import Settings
from tests.indexers import files
from tests.ocr import expect_ocr

DOMAIN = "legal-docs"  # a name no other test writes to: counts below are exact


def upload(http: httpx.Client, domain: str, named: list[tuple[str, bytes]], **params) -> httpx.Response:
    return http.post(
        f"/v1/domains/{domain}/documents",
        files=[("files", (name, data)) for name, data in named],
        params=params,
        timeout=300,
    )


@pytest.fixture(scope="module")
def legal(http: httpx.Client) -> dict:
    mail = files.eml(
        "Contrato de arrendamiento revisado",
        "Hola equipo, adjunto el anexo con las penalizaciones por retraso en la entrega.",
        [
            (
                "anexo.pdf",
                files.pdf(["Anexo A. La penalizacion por retraso es del cinco por ciento por semana."]),
                "application/pdf",
            )
        ],
    )
    named = [
        (
            "agreement.pdf",
            files.pdf(
                [
                    "The supplier shall deliver the goods within ten business days.",
                    None,
                    "Either party may terminate with sixty days written notice.",
                ]
            ),
        ),
        (
            "lease.docx",
            files.docx(
                "Office Lease",
                [("Rent", ["The monthly rent is 4,500 euros, due on the first day of each month."])],
            ),
        ),
        (
            "ledger.xlsx",
            files.xlsx({"Invoices": [["Invoice", "Client", "Amount"], ["INV-7", "Acme Corp", 1200]]}),
        ),
        ("thread.eml", mail),
        (
            "policy.html",
            files.html("Retention", "<h1>Data retention</h1><p>Court records are kept for twelve years.</p>"),
        ),
        ("broken.pdf", b"%PDF-1.4 this is not a pdf"),
        ("tool.exe", bytes(range(256)) * 8),
    ]
    resp = upload(http, DOMAIN, named)
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_multiformat_ingest_reports_every_file(legal: dict) -> None:
    by_name = {r["filename"]: r for r in legal["results"]}
    for name in ("agreement.pdf", "lease.docx", "ledger.xlsx", "thread.eml", "policy.html", "anexo.pdf"):
        assert by_name[name]["status"] == "created", by_name[name]
        assert by_name[name]["chunks"] > 0
    errors = {e["filename"]: e["error"] for e in legal["errors"]}
    assert set(errors) == {"broken.pdf", "tool.exe"}
    assert "PDF" in errors["broken.pdf"] and "unsupported" in errors["tool.exe"]
    assert by_name["anexo.pdf"]["parent_id"] == "thread.eml"
    docs = {d["id"]: d for d in legal["documents"]}
    assert docs["thread.eml"]["language"] == "es" and docs["agreement.pdf"]["language"] == "en"
    assert docs["agreement.pdf"]["page_count"] == 3
    assert docs["thread.eml"]["title"] == "Contrato de arrendamiento revisado"


def test_scanned_page_is_reported_or_ocrd(legal: dict) -> None:
    agreement = next(d for d in legal["documents"] if d["id"] == "agreement.pdf")
    if expect_ocr():  # page 2 is a drawing without text: OCR'd, and found empty
        assert agreement["warnings"] == ["page 2: OCR found no text"]
        assert agreement["metadata"]["ocr_pages"] == [2]
    else:
        assert len(agreement["warnings"]) == 1 and "needs OCR" in agreement["warnings"][0]


def test_list_get_and_models(http: httpx.Client, legal: dict, oai: openai.OpenAI) -> None:
    page = http.get(f"/v1/domains/{DOMAIN}/documents", params={"limit": 2}).json()
    assert page["total"] == 6 and len(page["data"]) == 2
    rest = http.get(f"/v1/domains/{DOMAIN}/documents", params={"offset": 2, "limit": 50}).json()["data"]
    assert len(rest) == 4
    doc = http.get(f"/v1/domains/{DOMAIN}/documents/thread.eml/anexo.pdf").json()
    assert doc["parent_id"] == "thread.eml" and doc["chunk_count"] > 0
    assert http.get(f"/v1/domains/{DOMAIN}/documents/nope").status_code == 404
    assert http.get("/v1/domains/unknown/documents").status_code == 404
    traversal = http.get("/v1/domains/..%2Fetc/documents")  # no route matches a name with '/'
    assert traversal.status_code == 404 and traversal.json()["error"]["type"] == "not_found_error"
    assert http.get("/v1/domains/..etc/documents").status_code == 400  # '..' in a name is refused
    ids = [m.id for m in oai.models.list().data]
    assert DOMAIN in ids


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_search_finds_the_right_passage(http: httpx.Client, legal: dict, mode: str) -> None:
    resp = http.post(
        f"/v1/domains/{DOMAIN}/search",
        json={"query": "how much is the monthly rent", "mode": mode, "top_k": 3},
    )
    hits = resp.json()["data"]
    assert hits[0]["document_id"] == "lease.docx", hits
    assert hits[0]["location"]["section"] == "Office Lease > Rent"
    assert set(hits[0]) >= {"document_id", "filename", "title", "chunk_id", "text", "score", "location"}


def test_search_locations_and_filters(http: httpx.Client, legal: dict) -> None:
    hit = http.post(
        f"/v1/domains/{DOMAIN}/search", json={"query": "terminate with written notice", "top_k": 1}
    ).json()["data"][0]
    assert hit["document_id"] == "agreement.pdf" and hit["location"]["page"] == 3
    hit = http.post(
        f"/v1/domains/{DOMAIN}/search", json={"query": "Acme Corp invoice amount", "top_k": 1, "mode": "bm25"}
    ).json()["data"][0]
    assert hit["location"] == {"sheet": "Invoices", "row": 2}
    only_es = http.post(
        f"/v1/domains/{DOMAIN}/search",
        json={"query": "monthly rent", "top_k": 5, "filter": {"language": "es"}},
    ).json()["data"]
    assert only_es and all(h["language"] == "es" for h in only_es)
    bad = http.post(f"/v1/domains/{DOMAIN}/search", json={"query": "x", "filter": {"a": {"$where": 1}}})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_filter"


def test_json_documents_dedup_update_delete(http: httpx.Client) -> None:
    url = "/v1/domains/memos/documents"
    body = {
        "documents": [
            {"id": "memo", "text": "Quarterly revenue grew by eight percent.", "metadata": {"quarter": "Q3"}}
        ]
    }
    assert http.post(url, json=body).json()["results"][0]["status"] == "created"
    assert http.post(url, json=body).json()["results"][0]["status"] == "unchanged"
    body["documents"][0]["text"] = "Quarterly revenue fell by two percent."
    assert http.post(url, json=body).json()["results"][0]["status"] == "updated"
    hits = http.post("/v1/domains/memos/search", json={"query": "revenue", "mode": "bm25"}).json()["data"]
    assert len(hits) == 1 and "fell" in hits[0]["text"]
    twin = http.post(
        url,
        json={
            "documents": [
                {
                    "id": "memo-copy",
                    "text": "Quarterly revenue fell by two percent.",
                    "metadata": {"quarter": "Q3"},
                }
            ]
        },
    )
    assert twin.json()["results"][0] == {
        **twin.json()["results"][0],
        "status": "duplicate",
        "duplicate_of": "memo",
    }
    assert http.delete(f"{url}/memo").json()["deleted"] == ["memo"]
    assert (
        http.post("/v1/domains/memos/search", json={"query": "revenue", "mode": "bm25"}).json()["data"] == []
    )
    assert http.delete(f"{url}/memo").status_code == 404


def test_delete_removes_attachments(http: httpx.Client) -> None:
    mail = files.eml(
        "Minutes", "See attached.", [("notes.txt", b"The board approved the merger.", "text/plain")]
    )
    assert upload(http, "board", [("m.eml", mail)]).status_code == 201
    assert http.delete("/v1/domains/board/documents/m.eml").json()["deleted"] == ["m.eml", "m.eml/notes.txt"]
    assert http.get("/v1/domains/board/documents").json()["total"] == 0


def test_zip_archive_members_are_child_documents(http: httpx.Client) -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("expediente/demanda.txt", "El demandante reclama el pago de 12.000 euros por daños.")
        z.writestr("expediente/../../escape.txt", "Path traversal attempt stays inside the archive id.")
    body = upload(http, "zipcase", [("case.zip", buf.getvalue())]).json()
    by_id = {r["id"]: r for r in body["results"]}
    assert by_id["case.zip"]["document_status"] == "container"
    assert by_id["case.zip/expediente/demanda.txt"]["parent_id"] == "case.zip"
    assert "case.zip/expediente/escape.txt" in by_id
    hit = http.post("/v1/domains/zipcase/search", json={"query": "pago por daños", "top_k": 1}).json()[
        "data"
    ][0]
    assert hit["document_id"] == "case.zip/expediente/demanda.txt"


def test_large_batch_runs_as_a_job_with_progress(http: httpx.Client) -> None:
    docs = [
        {
            "id": f"case-{i}",
            "text": f"Case {i}: the court ruled on matter number {i} after {i % 7 + 1} hearings.",
        }
        for i in range(40)
    ]
    resp = http.post("/v1/domains/cases/documents", json={"documents": docs})
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert job["object"] == "job" and resp.headers["location"] == f"/v1/jobs/{job['id']}"
    deadline = time.monotonic() + 120
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = http.get(f"/v1/jobs/{job['id']}").json()
    assert job["status"] == "succeeded", job
    assert job["progress"]["documents_done"] == job["progress"]["documents_total"] == 40
    assert job["progress"]["chunks_done"] == job["progress"]["chunks_total"] >= 40
    assert len(job["results"]) == 40 and not job["errors"]
    assert http.get("/v1/jobs/job-nope").status_code == 404


def test_bad_uploads(http: httpx.Client, make_server, base_settings: Settings) -> None:
    assert http.post("/v1/domains/Bad Name/documents", json={"documents": [{"text": "x"}]}).status_code == 400
    assert (
        http.post(
            "/v1/domains/x/documents", content=b"plain", headers={"content-type": "text/plain"}
        ).status_code
        == 415
    )
    assert http.post("/v1/domains/x/documents", json={"documents": []}).status_code == 422
    assert (
        http.post("/v1/domains/x/documents", json={"documents": [{"text": "x", "evil": 1}]}).status_code
        == 422
    )
    assert (
        http.post(
            "/v1/domains/x/documents", files={"files": ("a.txt", b"hi")}, data={"metadata": "{oops"}
        ).status_code
        == 400
    )
    small = base_settings.model_copy(
        update={
            "knowledge": base_settings.knowledge.model_copy(
                update={"max_file_bytes": 2048, "max_upload_bytes": 8192}
            )
        }
    )
    server = make_server(small)
    big = httpx.post(f"{server.url}/v1/domains/x/documents", files={"files": ("big.txt", b"a" * 4096)})
    assert big.status_code == 413 and big.json()["error"]["code"] == "file_too_large"
    huge = httpx.post(f"{server.url}/v1/domains/x/documents", files={"files": ("huge.txt", b"a" * 20000)})
    assert huge.status_code == 413


def test_admin_routes_need_admin_key(make_server, base_settings: Settings, legal: dict) -> None:
    keyed = make_server(base_settings.model_copy(update={"api_keys": ["q"], "admin_keys": ["a"]}))
    q = {"Authorization": "Bearer q"}
    a = {"Authorization": "Bearer a"}
    body = {"documents": [{"text": "x"}]}
    rent = {"documents": [{"id": "lease.docx", "text": "The rent is due on the first of the month."}]}
    assert httpx.post(f"{keyed.url}/v1/domains/{DOMAIN}/documents", json=rent, headers=a).status_code == 201
    assert httpx.post(f"{keyed.url}/v1/domains/{DOMAIN}/documents", json=body, headers=q).status_code == 403
    assert httpx.delete(f"{keyed.url}/v1/domains/{DOMAIN}/documents/lease.docx", headers=q).status_code == 403
    assert (
        httpx.post(f"{keyed.url}/v1/domains/{DOMAIN}/search", json={"query": "rent"}, headers=q).status_code
        == 200
    )
    assert httpx.get(f"{keyed.url}/v1/domains/{DOMAIN}/documents", headers=q).status_code == 200
    assert httpx.post(f"{keyed.url}/v1/domains/scratch/documents", json=body, headers=a).status_code == 201


def test_chat_with_domain_returns_sources(oai: openai.OpenAI, legal: dict) -> None:
    resp = oai.chat.completions.create(
        model=DOMAIN,
        messages=[{"role": "user", "content": "What is the monthly rent of the office?"}],
        max_tokens=40,
        temperature=0,
    )
    sources = resp.model_extra["sources"]
    assert sources and sources[0]["index"] == 1
    assert any(s["document_id"] == "lease.docx" for s in sources)
    assert resp.usage.prompt_tokens > 100  # the passages were in the prompt
    stream = oai.chat.completions.create(
        model=DOMAIN,
        messages=[{"role": "user", "content": "What is the monthly rent of the office?"}],
        max_tokens=5,
        stream=True,
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].model_extra["sources"] == sources
    completion = oai.completions.create(
        model=DOMAIN, prompt="The monthly rent of the office is", max_tokens=5, temperature=0
    )
    assert any(s["document_id"] == "lease.docx" for s in completion.model_extra["sources"])


def test_base_model_has_no_sources(oai: openai.OpenAI, model_name: str) -> None:
    resp = oai.chat.completions.create(
        model=model_name, messages=[{"role": "user", "content": "Hi"}], max_tokens=3
    )
    assert resp.model_extra.get("sources") is None
