"""Hybrid retrieval: stemmed BM25 per language, the head field, fusion, the v1→v2 store migration,
the reranking stage and the evaluation / tuning arithmetic — on real collections (SQLite, FAISS,
the bundled embedder; stemming, heads and reranking on Milvus Lite too)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from indexers import lexical
from indexers.evaluation import LabelledQuery, Pools, Setting, choose, score, split
from indexers.ingest import Ingestor, Source
from indexers.rerank import CrossEncoderReranker, Reranker, contextual_text
from indexers.store import Collection, CollectionSettings
from indexers.store.fusion import Fusion, confidence, fuse, weights
from indexers.store.sqlite_store import SCHEMA_VERSION, DocumentStore


@pytest.fixture
def collection(tmp_path: Path, embedder) -> Collection:
    c = Collection(tmp_path / "c", embedder, CollectionSettings(index_kind="flat"))
    yield c
    c.close()


@pytest.fixture(params=["faiss", "milvus"])
def either(request, tmp_path: Path, embedder, milvus_backend, domain_name: str):
    """A collection on each backend (Milvus Lite for Milvus): stemming, heads and reranking are
    the same on both."""
    if request.param == "milvus":
        yield milvus_backend.open(domain_name, embedder, CollectionSettings(), create=True)
        milvus_backend.drop(domain_name)
        return
    c = Collection(tmp_path / "c", embedder, CollectionSettings(index_kind="flat"))
    yield c
    c.close()


def ingest(collection: Collection, chunker, docs: list[Source]) -> None:
    results = Ingestor(collection, chunker).run(docs)
    assert all(r.status == "created" for r in results), results


def docs_of(hits) -> list[str]:
    return list(dict.fromkeys(h.document_id for h in hits))


def test_stemming_follows_each_documents_language():
    assert lexical.analyze("Los contratos fueron rescindidos", "es") == "los contrat fueron rescind"
    assert lexical.analyze("The contracts were terminated", "en") == "the contract were termin"
    assert lexical.analyze("Die Verträge", None) == "die verträge"  # no language: words as they are
    # a query is stemmed in every language the collection holds, plus the word itself
    terms = lexical.query_terms("contratos terminated", ["en", "es"])
    assert {"contratos", "contrat", "terminated", "termin"} <= set(terms)
    assert lexical.query_terms("a b 7", ["en"]) == ["7"]  # single letters dropped, digits kept


def test_bm25_finds_inflected_forms_in_spanish_and_english(either, chunker):
    collection = either
    ingest(
        collection,
        chunker,
        [
            Source(
                id="es",
                filename="arrendamiento.txt",
                text="El arrendatario pagará las rentas mensuales. Los contratos podrán rescindirse "
                "con aviso previo de sesenta días naturales por cualquiera de las partes.",
            ),
            Source(
                id="en",
                filename="supply.txt",
                text="The supplier delivers the goods within ten business days. Either party may "
                "terminate this agreement with written notice to the other party.",
            ),
        ],
    )
    assert collection.store.languages() == ["en", "es"]
    # neither query word appears as written in its document: only the stems match
    assert docs_of(collection.search("contrato rescindido", 2, "bm25"))[0] == "es"
    assert docs_of(collection.search("termination of agreements", 2, "bm25"))[0] == "en"


@pytest.mark.parametrize("backend", ["faiss", "milvus"])
def test_title_words_weigh_more_than_body_words(
    backend, tmp_path, embedder, chunker, milvus_backend, domain_name
):
    body = "Payment terms and invoicing schedule for the services described below."
    docs = [
        Source(id="titled", filename="warranty.txt", title="Warranty", text=body),
        Source(id="mention", filename="misc.txt", text=body + " A warranty is not included."),
    ]
    ranks = {}
    for weight in (0.0, 4.0):
        settings = CollectionSettings(index_kind="flat", head_weight=weight)
        if backend == "milvus":
            name = f"{domain_name}-w{int(weight)}"
            c = milvus_backend.open(name, embedder, settings, create=True)
            ingest(c, chunker, docs)
            ranks[weight] = docs_of(c.search("warranty", 2, "bm25"))
            milvus_backend.drop(name)
            continue
        c = Collection(tmp_path / f"w{weight}", embedder, settings)
        ingest(c, chunker, docs)
        ranks[weight] = docs_of(c.search("warranty", 2, "bm25"))
        c.close()
    assert ranks[0.0][0] == "mention"  # body only: the one that says it in its text
    assert ranks[4.0][0] == "titled"  # the head field counts


def test_fusion_methods():
    dense = [(1, 0.90), (2, 0.89), (3, 0.88), (4, 0.20)]
    sparse = [(3, 25.0), (5, 4.0), (1, 3.9)]
    # relative-score fusion keeps BM25's wide margin for item 3; plain RRF cannot see it
    assert fuse(dense, sparse, Fusion("relative", 0.5, adaptive=False))[0][0] == 3
    rrf = fuse(dense, sparse, Fusion("rrf", 0.5, adaptive=False))
    assert rrf[0][0] == 1  # in both lists, ranked 1st and 3rd
    assert rrf[0][1] == pytest.approx(0.5 / 61 + 0.5 / 63)
    # all weight on one side: that side's order, the other side's items after it
    assert [i for i, _ in fuse(dense, sparse, Fusion("relative", 1.0))][:4] == [1, 2, 3, 4]
    assert [i for i, _ in fuse(dense, sparse, Fusion("dbsf", 0.0))][:3] == [3, 5, 1]
    with pytest.raises(ValueError):
        Fusion("relative", 1.5)


def test_adaptive_weights_follow_the_list_that_has_a_clear_winner():
    """A flat dense list (the embedder did not understand the query) next to a BM25 list with one
    clear hit: fixed equal weights let the flat list's top item win; adaptive weights do not."""
    flat = [(i, 0.50 - 0.002 * i) for i in range(1, 21)]
    peaked = [(99, 30.0)] + [(i, 2.0 - 0.05 * i) for i in range(1, 20)]
    assert fuse(flat, peaked, Fusion("relative", 0.5, adaptive=False))[0][0] == 1
    assert fuse(flat, peaked, Fusion("relative", 0.5))[0][0] == 99
    d, s = weights(flat, peaked, Fusion("relative", 0.5))
    assert s > 0.5 > d and d + s == pytest.approx(1.0)
    assert confidence([]) == 0.0 and confidence([(1, 3.0)]) == 1.0
    assert confidence([(1, 1.0), (2, 1.0), (3, 1.0)]) == 0.0  # all equal: no winner
    assert weights([], peaked, Fusion("relative", 0.5)) == (0.0, 1.0)  # nothing dense: BM25 alone
    assert weights(flat, peaked, Fusion("relative", 0.3, adaptive=False)) == (0.3, 0.7)


def test_a_version_1_store_is_migrated(tmp_path, embedder, chunker):
    """A store written before per-language BM25 (raw-text FTS through triggers) is re-indexed on open."""
    c = Collection(tmp_path / "old", embedder, CollectionSettings(index_kind="flat"))
    ingest(
        c,
        chunker,
        [
            Source(
                id="lease",
                filename="lease.txt",
                title="Lease",
                text="The monthly rents for the office are due on the first day of each month.",
            )
        ],
    )
    c.close()
    db = sqlite3.connect(tmp_path / "old" / "store.sqlite")
    db.executescript(
        """
        DROP TABLE terms;
        CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content='chunks', content_rowid='rowid');
        INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild');
        CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
            INSERT INTO chunks_fts(rowid, text) VALUES (new.rowid, new.text);
        END;
        PRAGMA user_version = 0;
        """
    )
    db.close()
    store = DocumentStore(tmp_path / "old" / "store.sqlite")
    names = {r[0] for r in store._db.execute("SELECT name FROM sqlite_master")}
    assert "chunks_fts" not in names and "chunks_ai" not in names
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert [i for i, _ in store.bm25("rent", 5)] == [int(i) for i in store.chunk_ids()]  # "rents" stemmed
    assert store.bm25("lease", 5)  # the title, from the head field
    store.close()


def test_deleting_a_document_removes_its_terms(collection, chunker):
    ingest(collection, chunker, [Source(id="a", text="Penalties for late delivery are five percent.")])
    assert collection.search("penalty", 3, "bm25")
    collection.delete("a")
    assert collection.search("penalty", 3, "bm25") == []
    assert collection.store._db.execute("SELECT COUNT(*) FROM terms").fetchone()[0] == 0


class KeywordReranker(Reranker):
    """A reranker of the interface's own shape: scores by how often a keyword occurs."""

    name = "keyword"

    def __init__(self, keyword: str) -> None:
        self.keyword = keyword
        self.seen: list[str] = []

    def score(self, query: str, texts: list[str]) -> np.ndarray:
        self.seen = texts
        return np.array([t.lower().count(self.keyword) for t in texts], dtype=np.float32)


def test_a_reranker_reorders_the_fused_candidates(either, chunker):
    collection = either
    ingest(
        collection,
        chunker,
        [
            Source(id=f"d{i}", title=f"Memo {i}", text=f"Quarterly revenue note {i}. " + "penalty " * i)
            for i in range(1, 6)
        ],
    )
    plain = collection.search("quarterly revenue", 3, "hybrid")
    reranker = KeywordReranker("penalty")
    hits = collection.search("quarterly revenue", 3, "hybrid", reranker=reranker)
    assert [h.document_id for h in hits] == ["d5", "d4", "d3"]
    assert [h.score for h in hits] == [5.0, 4.0, 3.0]  # the reranker's scores replace retrieval's
    assert len(reranker.seen) == 5 and all(t.startswith("Memo ") for t in reranker.seen)  # with headers
    assert [h.text for h in plain] != [h.text for h in hits]
    assert [
        h.document_id for h in collection.search("quarterly revenue", 3, reranker=reranker, min_score=4)
    ] == [
        "d5",
        "d4",
    ]


def test_cross_encoder_reranker_runs_a_sentence_transformers_cross_encoder(tmp_path, collection, chunker):
    """The real cross-encoder class on a model made from the bundled encoder (its head untrained):
    the search order is exactly the order of the model's own scores."""
    from sentence_transformers import CrossEncoder

    from app.checkpoints.prepare import embedder_dir

    folder = tmp_path / "cross-encoder"
    CrossEncoder(str(embedder_dir()), num_labels=1, local_files_only=True).save(str(folder))
    reranker = CrossEncoderReranker(str(folder), device="cpu")
    assert reranker.name == "cross-encoder"
    ingest(
        collection,
        chunker,
        [Source(id=f"n{i}", text=f"Note number {i} about shipping and rent.") for i in range(6)],
    )
    hits = collection.search("rent", 4, "hybrid", reranker=reranker)
    rows = collection.store.chunks([h.chunk_id for h in hits])
    expected = reranker.score("rent", [contextual_text(rows[h.chunk_id]) for h in hits])
    assert [h.score for h in hits] == pytest.approx(sorted(expected.tolist(), reverse=True), abs=1e-5)


def test_scores_on_hand_made_rankings():
    queries = [LabelledQuery("a", frozenset({"x"})), LabelledQuery("b", frozenset({"y", "z"}))]
    s = score([["x", "q"], ["q", "z", "y"]], queries)
    assert s.mrr == pytest.approx((1 + 1 / 2) / 2)
    assert s.hit == {1: 0.5, 3: 1.0, 5: 1.0, 10: 1.0}
    ideal = 1 + 1 / np.log2(3)
    assert s.ndcg == pytest.approx((1 + (1 / np.log2(3) + 1 / np.log2(4)) / ideal) / 2)
    assert split(10, 0.5, 0) == split(10, 0.5, 0) and len(split(10, 0.3, 1)[1]) == 3


def test_tuning_picks_bm25_weight_for_code_lookups_and_wins_on_held_out_queries(collection, chunker):
    """Invoice codes: the embedder sees near-identical texts, BM25 tells them apart. Tuning on half
    the queries must find a BM25-heavy setting that beats equal weights on the other half."""
    rng = np.random.default_rng(0)
    codes = [f"INV-{n}" for n in rng.choice(range(10_000, 99_999), 40, replace=False)]
    ingest(
        collection,
        chunker,
        [
            Source(id=c, text=f"Invoice {c}: consulting services for March, payable within 30 days.")
            for c in codes
        ],
    )
    queries = [LabelledQuery(f"invoice {c} consulting", frozenset({c})) for c in codes]
    pools = Pools.build(collection, queries)
    default = Setting()
    choice = choose(pools, queries, Setting("dense"), holdout=0.5, seed=0)
    assert choice.best.mode != "dense" and (choice.best.mode == "bm25" or choice.best.dense_weight < 0.5)
    assert choice.best_heldout.mrr > choice.default_heldout.mrr
    assert pools.evaluate(Setting("bm25"), queries).mrr > pools.evaluate(Setting("dense"), queries).mrr
    assert pools.evaluate(default, queries).mrr >= pools.evaluate(Setting("bm25"), queries).mrr - 1e-9
    assert 3 <= choice.top_k <= 10  # never fewer than MIN_TOP_K passages
    assert choice.public()["best"]["top_k"] == choice.top_k


def test_embedder_prefixes_for_models_trained_with_them(embedder):
    """e5-style models read "query: " / "passage: "; the prefixes are settings, applied per side."""
    from app.checkpoints.prepare import embedder_dir
    from indexers.embedding import SentenceTransformerEmbedder

    prefixed = SentenceTransformerEmbedder(
        str(embedder_dir()), device="cpu", query_prefix="query: ", passage_prefix="passage: "
    )
    np.testing.assert_allclose(prefixed.embed_query("rent"), embedder.embed(["query: rent"])[0], atol=1e-5)
    np.testing.assert_allclose(prefixed.embed(["rent"])[0], embedder.embed(["passage: rent"])[0], atol=1e-5)
    assert not np.allclose(prefixed.embed_query("rent"), embedder.embed_query("rent"), atol=1e-3)
