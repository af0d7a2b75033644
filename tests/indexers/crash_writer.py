"""Subprocess for the kill -9 test: ingests documents one by one, printing each acknowledgement."""

from __future__ import annotations

import sys
from pathlib import Path

from app.checkpoints.prepare import embedder_dir
from indexers.chunking import Chunker
from indexers.embedding import SentenceTransformerEmbedder
from indexers.ingest import Ingestor, Source
from indexers.store import Collection, CollectionSettings

if __name__ == "__main__":
    path, kind = Path(sys.argv[1]), sys.argv[2]
    embedder = SentenceTransformerEmbedder(str(embedder_dir()), device="cpu")
    collection = Collection(path, embedder, CollectionSettings(index_kind=kind, ivf_threshold=1))
    ingestor = Ingestor(collection, Chunker(embedder.tokenizer, max_tokens=48, overlap=8))
    print("ready", flush=True)
    for i in range(10_000):
        text = " ".join(
            f"Clause {i}.{j}: the party number {i} shall pay invoice {j} within {j + 3} days."
            for j in range(12)
        )
        result = ingestor.run([Source(id=f"doc-{i}", text=text)])[0]
        print(f"acked {result.id} {result.chunks}", flush=True)  # Ingestor.run returns after the commit
