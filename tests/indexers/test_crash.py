"""kill -9 during ingestion: every acknowledged document survives, index and SQLite agree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from indexers.store import Collection, CollectionSettings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_kill_9_during_ingestion(tmp_path: Path, embedder, kind: str) -> None:
    path = tmp_path / "col"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.indexers.crash_writer", str(path), kind],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    acked: dict[str, int] = {}
    try:
        assert proc.stdout.readline().strip() == "ready"
        while len(acked) < 12:
            line = proc.stdout.readline()
            assert line, "writer died early"
            _, doc_id, chunks = line.split()
            acked[doc_id] = int(chunks)
        time.sleep(0.15)  # land inside a later write
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()

    collection = Collection(path, embedder, CollectionSettings(index_kind=kind, ivf_threshold=1))
    try:
        for doc_id, chunks in acked.items():
            record = collection.store.get(doc_id)
            assert record is not None and record.chunk_count == chunks
        docs, chunk_total = collection.store.count()
        assert docs >= len(acked)
        assert sorted(collection.index.ids()) == sorted(collection.store.chunk_ids())
        assert len(collection.index) == chunk_total
        hit = collection.search("party number 3 shall pay invoice 5", top_k=3, mode="hybrid")
        assert hit and hit[0].document_id.startswith("doc-")
    finally:
        collection.close()
