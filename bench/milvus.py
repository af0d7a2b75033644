"""The Milvus backend against FAISS/SQLite: retrieval quality, tenancy, ingest speed, search latency.

1. ``quality``: the three corpora of ``bench/retrieval.py`` (known-item queries), ingested once into
   FAISS/SQLite and copied into Milvus Lite with their vectors (no re-embedding, so the dense sides
   see identical vectors); MRR@10 / hit@1 / hit@10 of dense, BM25 and the default hybrid on both,
   from the same candidate pools as the retrieval bench, with each backend's search p50/p99.
2. ``tenancy``: the BM25 MRR@10 of each corpus alone in its domain's collection against the same
   corpus inside one shared collection holding all three, restricted to it by a filter (what a
   partition key per domain gives: Milvus computes BM25 statistics per collection).
3. ``ingest``: the whole pipeline (load, chunk, embed, write) into each backend, alternated over
   rounds, on the constitution's articles; and the write alone (pre-embedded chunks, as a
   migration writes them).
4. ``latency``: search p50/p99 (dense, BM25, hybrid) at 1k and 100k chunks of synthetic text and
   clustered 384-d vectors, the same chunks in both backends.

Run: ``make bench-milvus`` (= ``.venv/bin/python bench/milvus.py``; the corpora as for
``make bench-retrieval``); results in ``docs/results/milvus.json``.
"""

from __future__ import annotations

import argparse
import json
import os
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
from bench.corpora import load  # noqa: E402
from bench.retrieval import _latency, collection_for  # noqa: E402
from indexers.chunking import Chunker  # noqa: E402
from indexers.embedding import Embedder, SentenceTransformerEmbedder  # noqa: E402
from indexers.evaluation import LabelledQuery, Pools, Setting  # noqa: E402
from indexers.ingest import Ingestor, Source  # noqa: E402
from indexers.store import Collection, CollectionSettings  # noqa: E402
from indexers.store.milvus import MilvusBackend, MilvusConnection  # noqa: E402
from indexers.store.sqlite_store import ChunkRow, DocumentRecord  # noqa: E402

MODES = {"dense": Setting("dense"), "bm25": Setting("bm25"), "hybrid (default)": Setting()}


def copy(src: Collection, dst, tenant: str | None = None) -> int:
    """Every document of ``src`` into ``dst`` with its vectors (``tenant`` tags its metadata)."""
    records = src.store.list(0, 1 << 62)
    for start in range(0, len(records), 64):
        batch = []
        for record in records[start : start + 64]:
            if tenant is not None:
                record.metadata = {**record.metadata, "tenant": tenant}
            batch.append((record, src.store.export(record.id)))
        dst.write_many(batch, keep_times=True)
    dst.after_batch()
    return len(records)


def scores(pools: Pools, queries: list[LabelledQuery]) -> dict:
    out = {}
    for label, setting in MODES.items():
        s = pools.evaluate(setting, queries).public()
        out[label] = {k: s[k] for k in ("mrr@10", "hit@1", "hit@10")}
    return out


def bm25_mrr(collection, queries: list[LabelledQuery], flt: dict | None = None) -> float:
    total = 0.0
    for q in queries:
        _, sparse = collection.candidates(q.query, 40, "bm25", flt)
        rows = collection.store.chunks([c for c, _ in sparse])
        docs = list(dict.fromkeys(rows[c]["document_id"] for c, _ in sparse if c in rows))[:10]
        hit = next((i for i, d in enumerate(docs, start=1) if d in q.relevant), None)
        total += 1 / hit if hit else 0.0
    return round(total / len(queries), 4)


def quality(
    backend: MilvusBackend, embedder: Embedder, chunker: Chunker, corpora: list[str]
) -> tuple[dict, dict]:
    out, tenancy = {}, {}
    shared = backend.open("shared", embedder, CollectionSettings(), create=True)
    per_corpus = {}
    for corpus in corpora:
        docs = load(corpus)
        queries = [LabelledQuery(d.query, frozenset([d.id])) for d in docs]
        faiss = collection_for(corpus, "minilm", embedder, chunker, docs)
        t = time.perf_counter()
        milvus = backend.open(corpus, embedder, CollectionSettings(), create=True)
        if milvus.store.count()[0] != len(docs):
            copy(faiss, milvus)
        copy_s = time.perf_counter() - t
        texts = [q.query for q in queries]
        row = {"documents": len(docs), "chunks": faiss.store.count()[1], "queries": len(queries)}
        for name, c in (("faiss", faiss), ("milvus", milvus)):
            modes = scores(Pools.build(c, queries), queries)
            for label, mode in (("dense", "dense"), ("bm25", "bm25"), ("hybrid (default)", "hybrid")):
                modes[label].update(_latency(lambda q, c=c, mode=mode: c.search(q, 10, mode), texts))
            row[name] = modes
        row["milvus_copy_s"] = round(copy_s, 1)
        print(corpus, json.dumps(row), flush=True)
        out[corpus] = row
        copy(faiss, shared, tenant=corpus)
        per_corpus[corpus] = (queries, milvus)
        faiss.close()
    for corpus, (queries, milvus) in per_corpus.items():
        tenancy[corpus] = {
            "own collection": bm25_mrr(milvus, queries),
            "shared collection, filtered": bm25_mrr(shared, queries, {"tenant": corpus}),
        }
        print("tenancy", corpus, tenancy[corpus], flush=True)
    return out, tenancy


def ingest(backend: MilvusBackend, embedder: Embedder, chunker: Chunker, rounds: int) -> dict:
    articles = load("constitution")
    srcs = [Source(id=a.id, filename=a.filename, data=a.text.encode()) for a in articles]
    pipe = {"faiss": [], "milvus": []}
    write = {"faiss": [], "milvus": []}
    for r in range(rounds):
        order = ("faiss", "milvus") if r % 2 == 0 else ("milvus", "faiss")
        for name in order:
            with tempfile.TemporaryDirectory() as tmp:
                c = (
                    Collection(Path(tmp) / "c", embedder, CollectionSettings(index_kind="flat"))
                    if name == "faiss"
                    else backend.open(f"ingest-{r}", embedder, CollectionSettings(), create=True)
                )
                t = time.perf_counter()
                Ingestor(c, chunker, KnowledgeSettings().embed_batch).run(srcs)
                pipe[name].append(time.perf_counter() - t)
                target = (
                    Collection(Path(tmp) / "w", embedder, CollectionSettings(index_kind="flat"))
                    if name == "faiss"
                    else backend.open(f"write-{r}", embedder, CollectionSettings(), create=True)
                )
                t = time.perf_counter()
                copy(c, target)
                write[name].append(time.perf_counter() - t)
                chunks = c.store.count()[1]
                if name == "faiss":
                    c.close()
                    target.close()
                else:
                    backend.drop(f"ingest-{r}")
                    backend.drop(f"write-{r}")
    med = {k: statistics.median(v) for k, v in pipe.items()}
    wmed = {k: statistics.median(v) for k, v in write.items()}
    out = {
        "documents": len(srcs),
        "chunks": chunks,
        "rounds": rounds,
        "pipeline_chunks_per_s": {k: round(chunks / v, 1) for k, v in med.items()},
        "pipeline_ratio_milvus_over_faiss": round(med["faiss"] / med["milvus"], 3),
        "write_chunks_per_s": {k: round(chunks / v, 1) for k, v in wmed.items()},
        "write_ratio_milvus_over_faiss": round(wmed["faiss"] / wmed["milvus"], 3),
    }
    print("ingest", json.dumps(out), flush=True)
    return out


class TableEmbedder(Embedder):
    """Queries' vectors looked up by text (the synthetic corpus has no model behind it)."""

    def __init__(self, dim: int, table: dict[str, np.ndarray]) -> None:
        self.dim = dim
        self.table = table
        self.max_tokens = 256

    def embed(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def embed_query(self, text: str) -> np.ndarray:
        return self.table[text]


def latency(backend: MilvusBackend, sizes: list[int], n_queries: int, dim: int = 384) -> list[dict]:
    rng = np.random.default_rng(0)
    vocabulary = [f"w{i}" for i in range(20_000)]
    weights = 1 / np.arange(1, len(vocabulary) + 1) ** 1.05
    weights /= weights.sum()
    rows = []
    for n in sizes:
        centers = rng.standard_normal((256, dim)).astype(np.float32)
        vectors = centers[rng.integers(0, 256, n)] + 0.8 * rng.standard_normal((n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        words = rng.choice(len(vocabulary), size=(n, 40), p=weights)
        picks = rng.choice(n, n_queries, replace=False)
        table = {}
        for j, i in enumerate(picks):
            text = f"q{j} " + " ".join(vocabulary[w] for w in words[i][rng.choice(40, 3, replace=False)])
            v = vectors[i] + 0.1 * rng.standard_normal(dim).astype(np.float32)
            table[text] = v / np.linalg.norm(v)
        embedder = TableEmbedder(dim, table)
        with tempfile.TemporaryDirectory() as tmp:
            faiss = Collection(Path(tmp) / "c", embedder, CollectionSettings(index_kind="flat"))
            milvus = backend.open(f"synthetic-{n}", embedder, CollectionSettings(), create=True)
            per_doc = max(10, n // 1000)  # 1,000 documents at 100k chunks: loading stays minutes
            for name, c in (("faiss", faiss), ("milvus", milvus)):
                t = time.perf_counter()
                for d in range(n // per_doc):
                    record = DocumentRecord(id=f"d{d}", sha256=f"{d:064x}", status="ok", language="en")
                    chunks = [
                        ChunkRow(
                            ordinal=k,
                            text=" ".join(vocabulary[w] for w in words[d * per_doc + k]),
                            tokens=40,
                            vector=vectors[d * per_doc + k],
                        )
                        for k in range(per_doc)
                    ]
                    c.write(record, chunks)
                c.after_batch()
                load_s = time.perf_counter() - t
                texts = list(table)
                for mode in ("dense", "bm25", "hybrid"):
                    row = {
                        "chunks": n,
                        "backend": name,
                        "mode": mode,
                        "load_s": round(load_s, 1),
                        **_latency(lambda q, c=c, mode=mode: c.search(q, 10, mode), texts),
                    }
                    print(json.dumps(row), flush=True)
                    rows.append(row)
            faiss.close()
            backend.drop(f"synthetic-{n}")
    return rows


def markdown(report: dict) -> str:
    """The tables of docs/benchmarks.md "Milvus", from the JSON this bench writes."""
    lines = [
        "| corpus | retrieval | FAISS MRR@10 | Milvus MRR@10 | difference | FAISS p50 / p99 (ms) | Milvus p50 / p99 (ms) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for corpus, r in report.get("quality", {}).items():
        for mode in MODES:
            f, m = r["faiss"][mode], r["milvus"][mode]
            lines.append(
                f"| {corpus} ({r['documents']} docs, {r['chunks']} chunks) | {mode} | {f['mrr@10']:.4f} | "
                f"{m['mrr@10']:.4f} | {m['mrr@10'] - f['mrr@10']:+.4f} | {f['p50_ms']} / {f['p99_ms']} | "
                f"{m['p50_ms']} / {m['p99_ms']} |"
            )
    if report.get("tenancy"):
        lines += [
            "",
            "| corpus | BM25 MRR@10, own collection | in one shared collection, filtered | difference |",
            "| --- | --- | --- | --- |",
        ]
        for corpus, t in report["tenancy"].items():
            own, shared = t["own collection"], t["shared collection, filtered"]
            lines.append(f"| {corpus} | {own:.4f} | {shared:.4f} | {shared - own:+.4f} |")
    if report.get("ingest"):
        i = report["ingest"]
        lines += [
            "",
            f"| ingest ({i['documents']} documents, {i['chunks']} chunks, median of {i['rounds']}) | FAISS chunks/s | Milvus Lite chunks/s | Milvus / FAISS |",
            "| --- | --- | --- | --- |",
            f"| whole pipeline (load, chunk, embed, write) | {i['pipeline_chunks_per_s']['faiss']} | "
            f"{i['pipeline_chunks_per_s']['milvus']} | {i['pipeline_ratio_milvus_over_faiss']} |",
            f"| write only (pre-embedded, as a migration) | {i['write_chunks_per_s']['faiss']} | "
            f"{i['write_chunks_per_s']['milvus']} | {i['write_ratio_milvus_over_faiss']} |",
        ]
    if report.get("latency"):
        lines += [
            "",
            "| chunks | mode | FAISS p50 / p99 (ms) | Milvus Lite p50 / p99 (ms) | load FAISS / Milvus (s) |",
            "| --- | --- | --- | --- | --- |",
        ]
        rows = {(r["chunks"], r["backend"], r["mode"]): r for r in report["latency"]}
        for n, _, mode in [k for k in rows if k[1] == "faiss"]:
            f, m = rows[(n, "faiss", mode)], rows.get((n, "milvus", mode))
            if m:
                lines.append(
                    f"| {n:,} | {mode} | {f['p50_ms']} / {f['p99_ms']} | {m['p50_ms']} / {m['p99_ms']} | "
                    f"{f['load_s']} / {m['load_s']} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", nargs="+", default=["quality", "ingest", "latency"])
    parser.add_argument("--corpora", nargs="+", default=["constitution", "manpages", "pydoc"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "milvus.json")
    parser.add_argument("--markdown", action="store_true", help="print the tables of --out and exit")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())))
        return
    settings = KnowledgeSettings()
    embedder = SentenceTransformerEmbedder(str(embedder_dir()), device="cpu")
    chunker = Chunker(embedder.tokenizer, settings.chunk_tokens, settings.chunk_overlap)
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        backend = MilvusBackend(MilvusConnection(str(Path(tmp) / "bench.db"), timeout_s=120))
        if "quality" in args.parts:
            report["quality"], report["tenancy"] = quality(backend, embedder, chunker, args.corpora)
        if "ingest" in args.parts:
            report["ingest"] = ingest(backend, embedder, chunker, args.rounds)
        if "latency" in args.parts:
            report["latency"] = latency(backend, args.sizes, args.queries)
        backend.close()
    report["machine"] = f"{os.cpu_count()} cores, CPU only; Milvus Lite embedded in the bench process"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
