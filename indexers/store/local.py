"""The embedded backend: one folder per domain under the data dir (SQLite + a FAISS index).

Its interface is the Milvus backend's (``indexers.store.milvus.backend``): which domains exist,
open one, drop one, report state; ``app.knowledge.base`` picks one by setting.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from indexers.embedding import Embedder
from indexers.store.collection import Collection, CollectionSettings

#: What a domain may be called (it names a folder here and a collection in Milvus).
DOMAIN_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class LocalBackend:
    def __init__(self, root: Path) -> None:
        self.root = root

    def domains(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if (p / "store.sqlite").is_file() and DOMAIN_NAME.match(p.name)
        )

    def has(self, domain: str) -> bool:
        return bool(DOMAIN_NAME.match(domain)) and (self.root / domain / "store.sqlite").is_file()

    def open(
        self, domain: str, embedder: Embedder, settings: CollectionSettings, create: bool = False
    ) -> Collection | None:
        if not create and not self.has(domain):
            return None
        return Collection(self.root / domain, embedder, settings)

    def drop(self, domain: str) -> bool:
        path = self.root / domain
        if not path.exists():
            return False
        shutil.rmtree(path)
        return True

    def state(self) -> dict[str, Any]:
        return {"backend": "faiss", "state": "ok"}

    def close(self) -> None:
        """Collections close themselves; the folder needs nothing."""
