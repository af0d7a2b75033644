"""The Milvus backend's own promises: filters mean what they mean on SQLite, a document switches
versions as a unit even when a write dies halfway, an unreachable server fails fast and says where."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from indexers.chunking import Chunker
from indexers.ingest import Ingestor, Source
from indexers.store import Collection, CollectionSettings
from indexers.store.errors import StoreUnavailable
from indexers.store.milvus import MilvusBackend, MilvusConnection
from indexers.store.milvus.schema import chunk_collection, domain_of

DOCS = [
    Source(
        id="a", text="Rent is due on the first day of each month.", metadata={"kind": "lease", "year": 2021}
    ),
    Source(
        id="b", text="The deposit is returned within thirty days.", metadata={"kind": "lease", "year": 2023}
    ),
    Source(id="c", text="Minutes of the board meeting about the budget.", metadata={"kind": "minutes"}),
    Source(id="d", text="A note with no metadata about rent and deposits.", title="Note"),
]
FILTERS = [
    {"kind": "lease"},
    {"kind": {"$ne": "lease"}},
    {"kind": {"$in": ["lease", "minutes"]}},
    {"kind": {"$nin": ["lease"]}},
    {"year": {"$gte": 2022}},
    {"year": None},
    {"year": {"$ne": None}},
    {"document_id": {"$in": ["a", "d"]}},
    {"title": "Note"},
    {"language": "en", "kind": {"$nin": ["minutes", "x"]}},
]


def test_filters_select_the_same_documents_on_both_backends(
    tmp_path: Path, embedder, chunker: Chunker, milvus_backend: MilvusBackend, domain_name: str
) -> None:
    faiss = Collection(tmp_path / "f", embedder)
    milvus = milvus_backend.open(domain_name, embedder, CollectionSettings(), create=True)
    try:
        for c in (faiss, milvus):
            assert [r.status for r in Ingestor(c, chunker).run(DOCS)] == ["created"] * 4
        for flt in FILTERS:
            found = [
                {h.document_id for h in c.search("rent deposit budget", top_k=10, mode=mode, flt=flt)}
                for c in (faiss, milvus)
                for mode in ("dense", "bm25")
            ]
            assert found[0] == found[2] and found[1] == found[3], flt
        assert {
            h.document_id for h in milvus.search("rent", top_k=10, mode="dense", flt={"kind": "lease"})
        } == {
            "a",
            "b",
        }
    finally:
        faiss.close()
        milvus_backend.drop(domain_name)


def test_a_write_that_dies_before_its_commit_shows_nothing_of_itself(
    embedder, chunker: Chunker, milvus_backend: MilvusBackend, domain_name: str, monkeypatch
) -> None:
    c = milvus_backend.open(domain_name, embedder, CollectionSettings(), create=True)
    try:
        Ingestor(c, chunker).run([Source(id="doc", text="The old text says ninety days notice.")])
        store = c.store
        real = store._upsert_records
        calls = []

        def dies_at_commit(items):
            calls.append(items)
            if len(calls) == 2:  # 1: mark pending, 2: the commit
                raise RuntimeError("killed")
            return real(items)

        monkeypatch.setattr(store, "_upsert_records", dies_at_commit)
        long_text = " ".join(f"The new text, clause {i}, says thirty days notice." for i in range(40))
        with pytest.raises(RuntimeError):
            Ingestor(c, chunker).run([Source(id="doc", text=long_text)])
        monkeypatch.setattr(store, "_upsert_records", real)

        # the new chunks are in Milvus but no search shows them: the old version is whole
        hits = c.search("thirty days notice clause", top_k=10, mode="bm25")
        assert [h.text for h in hits] == ["The old text says ninety days notice."]
        assert store.chunk_texts("doc") == ["The old text says ninety days notice."]
        raw = milvus_backend.conn.call("query", store.chunks_name, filter="", output_fields=["count(*)"])
        assert raw[0]["count(*)"] > 1

        # a sweep before the stale time leaves it (another process could be writing), after it cleans
        assert store.sweep() == 0
        assert store.sweep(now=time.time() + store.stale_after_s + 1) == 1
        raw = milvus_backend.conn.call("query", store.chunks_name, filter="", output_fields=["count(*)"])
        assert raw[0]["count(*)"] == 1
        # and the document can be written again
        assert Ingestor(c, chunker).run([Source(id="doc", text=long_text)])[0].status == "updated"
        assert "clause" in c.search("thirty days notice clause", top_k=1, mode="bm25")[0].text
    finally:
        milvus_backend.drop(domain_name)


def test_an_unreachable_server_fails_fast_naming_it() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    backend = MilvusBackend(MilvusConnection(f"http://127.0.0.1:{port}", timeout_s=2, connect_timeout_s=2))
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}"):
        backend.open("law", None, CollectionSettings(), create=True)  # type: ignore[arg-type]
    assert backend.domains() == [] and not backend.has("law")  # listings degrade, they do not raise
    state = backend.state()
    assert state["state"] == "unavailable" and str(port) in state["uri"]
    assert time.monotonic() - started < 30


def test_domain_names_map_to_collections_one_to_one() -> None:
    names = ["law", "law-es", "law_es", "law.es", "a-_.b", "x_h", "9lives"]
    collections = [chunk_collection("tailor_", n) for n in names]
    assert len(set(collections)) == len(names)
    assert all(c.replace("_", "").isalnum() for c in collections)
    assert [domain_of("tailor_", c) for c in collections] == names
    assert domain_of("tailor_", "tailor_documents") is None and domain_of("other_", collections[0]) is None


def test_two_writers_racing_on_one_document_never_show_a_mix(
    embedder, milvus_backend: MilvusBackend, domain_name: str
) -> None:
    """Two connections (as two processes would have) rewrite one document concurrently while a
    reader checks that every read shows one whole version: a read may come back empty while a
    version is switched under it (it read the old one's ids), never with a mix or a part."""
    import threading

    import numpy as np

    from indexers.store.sqlite_store import ChunkRow, DocumentRecord

    other = MilvusBackend(MilvusConnection(milvus_backend.conn.uri))
    a = milvus_backend.open(domain_name, embedder, CollectionSettings(), create=True)
    b = other.open(domain_name, embedder, CollectionSettings())
    vector = np.ones(embedder.dim, np.float32) / np.sqrt(embedder.dim)

    def write(c, tag: str, n: int) -> None:
        record = DocumentRecord(id="doc", sha256=tag.ljust(64, "0"), status="ok", language="en")
        c.write(record, [ChunkRow(i, f"{tag} clause {i} of {n}", 5, vector) for i in range(n)])

    write(a, "start", 2)
    stop, seen, errors = threading.Event(), [], []

    def read() -> None:
        while not stop.is_set():
            texts = a.store.chunk_texts("doc")
            hits = [h.text for h in a.search("clause", top_k=20, mode="bm25")]
            for view in [v for v in (texts, hits) if v]:
                tags = {t.split()[0] for t in view}
                total = {t.split()[-1] for t in view}
                if len(tags) != 1 or len(total) != 1 or len(view) != int(next(iter(total))):
                    errors.append(view)
            seen.append(texts[0].split()[0] if texts else None)

    def writer(c, name: str, sizes: list[int]) -> None:
        for r, n in enumerate(sizes):
            write(c, f"{name}{r}", n)

    threads = [
        threading.Thread(target=read),
        threading.Thread(target=writer, args=(a, "A", [3, 5, 2, 4] * 2)),
        threading.Thread(target=writer, args=(b, "B", [4, 2, 5, 3] * 2)),
    ]
    try:
        for t in threads:
            t.start()
        for t in threads[1:]:
            t.join(120)
        stop.set()
        threads[0].join(60)
        assert not errors, errors[:3]
        assert len(set(seen)) > 1  # the reader saw versions come and go
        final = a.store.chunk_texts("doc")
        tag, n = final[0].split()[0], int(final[0].split()[-1])
        assert len(final) == n and all(t.split()[0] == tag for t in final)
        # what a loser could not know it lost is invisible, and goes once it cannot be in flight
        current = a.store._record_row("doc")["version"]
        a.store.sweep_versions("doc", current, now=time.time() + a.store.stale_after_s + 1)
        raw = milvus_backend.conn.call("query", a.store.chunks_name, filter="", output_fields=["count(*)"])
        assert raw[0]["count(*)"] == n
    finally:
        other.close()
        milvus_backend.drop(domain_name)
