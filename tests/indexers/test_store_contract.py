"""One contract every vector-index backend and every collection configuration must pass: FAISS flat
and IVF over SQLite, and Milvus (Milvus Lite, embedded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexers.chunking import Chunker
from indexers.ingest import Ingestor, Source
from indexers.store import Collection, CollectionSettings
from indexers.store.vector_index import FaissIndex, make_index

BACKENDS = ["flat", "ivf"]


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", BACKENDS)
def test_index_add_search_remove_save_load(kind: str, tmp_path: Path) -> None:
    vectors = unit(2000, 32, 1)
    ids = np.arange(10, 2010, dtype=np.int64)
    index = make_index(kind, 32, vectors)
    index.add(ids, vectors)
    assert len(index) == 2000 and set(index.ids()) == set(ids)
    scores, found = index.search(vectors[5], 3)
    assert found[0] == 15 and scores[0] == pytest.approx(1.0, abs=1e-5)
    _, found = index.search(vectors[5], 5, allowed=np.array([15, 20]))
    assert set(found) <= {15, 20} and 15 in found
    index.remove(np.array([15]))
    assert 15 not in index.search(vectors[5], 5)[1] and len(index) == 1999
    index.save(tmp_path / "i.faiss")
    loaded = FaissIndex.load(tmp_path / "i.faiss")
    assert loaded.kind == kind and set(loaded.ids()) == set(ids) - {15}


@pytest.fixture(params=BACKENDS)
def faiss_collection(request, tmp_path: Path, embedder) -> Collection:
    # ivf from the first chunk: the threshold is tiny so the contract runs on the approximate index
    settings = CollectionSettings(index_kind=request.param, ivf_threshold=1, exact_filter_limit=2)
    c = Collection(tmp_path / "col", embedder, settings)
    yield c
    c.close()


@pytest.fixture(params=[*BACKENDS, "milvus"])
def collection(request, tmp_path: Path, embedder, milvus_backend, domain_name: str):
    if request.param == "milvus":
        c = milvus_backend.open(domain_name, embedder, CollectionSettings(), create=True)
        yield c
        milvus_backend.drop(domain_name)
        return
    settings = CollectionSettings(index_kind=request.param, ivf_threshold=1, exact_filter_limit=2)
    c = Collection(tmp_path / "col", embedder, settings)
    yield c
    c.close()


def index_matches_store(collection) -> bool:
    """FAISS: the index holds exactly the store's chunks (Milvus has no separate index to check)."""
    if not isinstance(collection, Collection):
        return True
    return set(collection.index.ids()) == set(collection.store.chunk_ids())


DOCS = [
    Source(
        id="nda",
        text="The receiving party shall keep all confidential information secret for five years.",
        metadata={"kind": "contract", "year": 2023},
    ),
    Source(
        id="lease",
        text="The tenant pays a monthly rent of 900 euros and a deposit of two months.",
        metadata={"kind": "contract", "year": 2021},
    ),
    Source(
        id="minutes",
        text="The board approved the budget and elected a new chair at the March meeting.",
        metadata={"kind": "minutes", "year": 2024},
    ),
    Source(
        id="es",
        text="El arrendatario debe pagar la renta mensual antes del día cinco de cada mes.",
        metadata={"kind": "contract", "year": 2022},
    ),
]


def ingest(collection: Collection, chunker: Chunker, sources: list[Source]):
    return Ingestor(collection, chunker).run(sources)


def test_collection_contract(collection: Collection, chunker: Chunker) -> None:
    results = ingest(collection, chunker, DOCS)
    assert [r.status for r in results] == ["created"] * 4
    if isinstance(collection, Collection):
        assert collection.index.kind == collection.settings.index_kind

    for mode in ("dense", "bm25", "hybrid"):
        hits = collection.search("how long must confidential information stay secret", top_k=2, mode=mode)
        assert hits and hits[0].document_id == "nda", mode
    assert collection.search("renta mensual arrendatario", top_k=1, mode="bm25")[0].document_id == "es"
    assert {d.language for d in collection.store.list()} >= {"en", "es"}

    # filters apply before ranking: the best match overall is excluded, the best allowed one returned
    hits = collection.search(
        "confidential information secret", top_k=1, mode="dense", flt={"kind": "minutes"}
    )
    assert [h.document_id for h in hits] == ["minutes"]
    hits = collection.search(
        "rent", top_k=5, mode="hybrid", flt={"year": {"$gte": 2022}, "kind": {"$in": ["contract"]}}
    )
    assert {h.document_id for h in hits} <= {"nda", "es"} and hits

    # identical content is a no-op; new content under the same id replaces the old chunks
    again = ingest(collection, chunker, [DOCS[0]])
    assert again[0].status == "unchanged"
    _, before = collection.store.count()
    updated = ingest(
        collection,
        chunker,
        [Source(id="nda", text="Confidentiality now lasts ten years.", metadata={"kind": "contract"})],
    )
    assert updated[0].status == "updated"
    assert collection.store.count()[1] == before
    assert "ten years" in collection.search("confidentiality duration", top_k=1, mode="bm25")[0].text
    assert all("five years" not in h.text for h in collection.search("five years secret", top_k=5))

    # delete removes chunks and vectors
    assert collection.delete("lease") == ["lease"]
    assert all(h.document_id != "lease" for h in collection.search("monthly rent deposit", top_k=5))
    assert index_matches_store(collection)
    assert collection.store.get("lease") is None and collection.store.count()[0] == 3
    assert collection.delete("lease") == []


def test_reconcile_repairs_a_stale_index(
    faiss_collection: Collection, chunker: Chunker, embedder, tmp_path: Path
) -> None:
    collection = faiss_collection
    ingest(collection, chunker, DOCS[:2])
    collection.flush()
    saved = (collection.path / "vectors.faiss").read_bytes()
    ingest(collection, chunker, DOCS[2:])
    collection.delete("nda")
    collection.close()
    (collection.path / "vectors.faiss").write_bytes(saved)  # the index file lags SQLite, as after a crash
    reopened = Collection(collection.path, embedder, collection.settings)
    try:
        assert set(reopened.index.ids()) == set(reopened.store.chunk_ids())
        assert reopened.search("board meeting budget", top_k=1)[0].document_id == "minutes"
    finally:
        reopened.close()


def test_corrupt_index_is_rebuilt(faiss_collection: Collection, chunker: Chunker, embedder) -> None:
    collection = faiss_collection
    ingest(collection, chunker, DOCS)
    collection.close()
    (collection.path / "vectors.faiss").write_bytes(b"garbage")
    reopened = Collection(collection.path, embedder, collection.settings)
    try:
        assert len(reopened.index) == reopened.store.count()[1] > 0
    finally:
        reopened.close()


def test_filter_validation(collection: Collection) -> None:
    from indexers.store.filters import FilterError

    for bad in (
        {"kind; DROP TABLE": 1},
        {"kind": {"$regex": "x"}},
        {"kind": {"$in": []}},
        {"kind": {"a": [1]}},
    ):
        with pytest.raises(FilterError):
            collection.search("x", flt=bad)


def test_auto_switches_to_ivf_past_threshold(tmp_path: Path, embedder, chunker: Chunker) -> None:
    c = Collection(tmp_path / "auto", embedder, CollectionSettings(index_kind="auto", ivf_threshold=3))
    try:
        ingest(c, chunker, DOCS[:2])
        assert c.index.kind == "flat"
        ingest(c, chunker, DOCS[2:])
        assert c.index.kind == "ivf" and len(c.index) == c.store.count()[1]
    finally:
        c.close()


def test_a_full_disk_while_saving_the_index_loses_nothing(embedder, chunker: Chunker, tmp_path: Path) -> None:
    """/dev/full answers every write with ENOSPC: the index save fails, the documents stay."""
    collection = Collection(tmp_path / "c", embedder)
    Ingestor(collection, chunker).run([Source(id="a", text="The tenant pays a deposit of two months.")])
    tmp = tmp_path / "c" / "vectors.faiss.tmp"
    tmp.symlink_to("/dev/full")
    results = Ingestor(collection, chunker).run([Source(id="b", text="The landlord repairs the roof.")])
    assert [r.status for r in results] == ["created"]
    assert not tmp.exists() and not tmp.is_symlink()  # the partial copy was removed
    assert collection.search("who repairs the roof", top_k=1, mode="dense")[0].document_id == "b"
    tmp.symlink_to("/dev/full")
    collection.close()  # the save at close fails too: the file on disk misses document b
    assert not tmp.is_symlink()
    reopened = Collection(tmp_path / "c", embedder)  # the stale file on disk is reconciled from SQLite
    assert reopened.last_reconcile.added > 0
    assert reopened.search("who repairs the roof", top_k=1, mode="dense")[0].document_id == "b"
    assert reopened.store.count()[0] == 2
    reopened.close()
