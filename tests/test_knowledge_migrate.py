"""``tailor knowledge migrate``: FAISS/SQLite → Milvus Lite → FAISS again, vectors copied not
re-embedded, records kept, rankings the same on both sides, a second run skips, a busy data dir
refused."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from app.checkpoints.prepare import embedder_dir
from app.config import KnowledgeSettings
from app.datadir import DataDirLock
from app.knowledge.base import KnowledgeBase
from indexers.ingest import Source

DOCS = [
    Source(id="lease", text="The monthly rent is 900 euros, due on the first.", metadata={"kind": "lease"}),
    Source(id="nda", text="Confidential information stays secret for five years.", metadata={"kind": "nda"}),
    Source(id="minutes", text="The board approved the budget at the March meeting.", title="Board minutes"),
    Source(id="es", text="El arrendatario paga la renta mensual antes del día cinco."),
]
QUERIES = ["monthly rent", "how long is information confidential", "budget approval", "renta mensual"]


def migrate(data_dir: Path, to: str, **env: str) -> SimpleNamespace:
    """``tailor knowledge migrate --to <to>`` through the CLI, in this process (no cold imports)."""
    from typer.testing import CliRunner

    from app.cli import cli

    result = CliRunner().invoke(
        cli,
        ["knowledge", "migrate", "--to", to],
        env={"HF_HUB_OFFLINE": "1", "TAILOR_DATA_DIR": str(data_dir), "COLUMNS": "120", **env},
    )
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


def open_kb(data_dir: Path, backend: str) -> KnowledgeBase:
    return KnowledgeBase(data_dir / "collections", str(embedder_dir()), KnowledgeSettings(backend=backend))


def ranking(kb: KnowledgeBase, mode: str) -> list[list[tuple[str, float]]]:
    return [
        [(h.document_id, round(h.score, 4)) for h in kb.search_blocking("law", q, top_k=3, mode=mode)]
        for q in QUERIES
    ]


def test_migrate_to_milvus_and_back(tmp_path: Path) -> None:
    data = tmp_path / "data"
    kb = open_kb(data, "faiss")
    kb.ingest_blocking("law", DOCS)
    before = {mode: ranking(kb, mode) for mode in ("dense", "bm25")}
    records = {r.id: r for r in kb.collection("law").store.list()}
    vectors = [v for _, batch in kb.collection("law").store.vectors() for v in batch]
    kb.close()

    done = migrate(data, "milvus")
    assert done.returncode == 0, done.stderr
    assert "law: 4 copied (4 chunks)" in done.stdout and "target 4 / 4: verified" in done.stdout
    again = migrate(data, "milvus")
    assert again.returncode == 0 and "0 copied (0 chunks), 4 already there" in again.stdout

    milvus = open_kb(data, "milvus")
    try:
        # dense scores come from the copied vectors: the same to four places; BM25 ranks alike
        assert ranking(milvus, "dense") == before["dense"]
        assert [[d for d, _ in r] for r in ranking(milvus, "bm25")] == [
            [d for d, _ in r] for r in before["bm25"]
        ]
        store = milvus.collection("law").store
        for doc_id, record in records.items():
            copied = store.get(doc_id)
            assert copied is not None and (
                copied.sha256,
                copied.metadata,
                copied.created_at,
                copied.title,
            ) == (
                record.sha256,
                record.metadata,
                record.created_at,
                record.title,
            )
        for ids, batch in store.vectors():
            assert len(ids) == 4
            copied = {tuple(np.round(v, 6)) for v in batch}
            assert copied == {tuple(np.round(v, 6)) for v in vectors}
    finally:
        milvus.close()

    # and back into a data dir with no FAISS stores
    (data / "collections").rename(data / "collections.old")
    back = migrate(data, "faiss", TAILOR_KNOWLEDGE__BACKEND="milvus")
    assert back.returncode == 0 and "law: 4 copied" in back.stdout, back.stderr
    faiss = open_kb(data, "faiss")
    try:
        assert ranking(faiss, "dense") == before["dense"] and ranking(faiss, "bm25") == before["bm25"]
    finally:
        faiss.close()

    # a data dir a server holds is refused, naming the holder
    with DataDirLock(data):
        busy = migrate(data, "milvus")
    assert busy.returncode == 1 and f"in use by pid {os.getpid()}" in busy.stderr
