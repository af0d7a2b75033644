"""Uploaded files (OpenAI's ``/v1/files``): bytes and a small JSON record per file, written atomically.

Only ``purpose="fine-tune"`` is accepted; such files are validated line by line at upload, so a
job never starts on a file that cannot be read.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from indexers.durable import write_bytes_durably

_ID = re.compile(r"^file-[0-9a-f]{24}$")


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    examples: int = 0


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _paths(self, file_id: str) -> tuple[Path, Path] | None:
        if not _ID.fullmatch(file_id):
            return None
        return self.root / f"{file_id}.data", self.root / f"{file_id}.json"

    def add(self, filename: str, purpose: str, data: bytes, examples: int) -> StoredFile:
        record = StoredFile(
            id=f"file-{uuid.uuid4().hex[:24]}",
            filename=filename[-255:] or "upload.jsonl",
            purpose=purpose,
            bytes=len(data),
            created_at=int(time.time()),
            examples=examples,
        )
        data_path, meta_path = self._paths(record.id)  # type: ignore[misc]
        with self._lock:
            write_bytes_durably(data_path, data)
            write_bytes_durably(meta_path, json.dumps(asdict(record)).encode())
        return record

    def get(self, file_id: str) -> StoredFile | None:
        paths = self._paths(file_id)
        if paths is None or not paths[1].exists():
            return None
        try:
            return StoredFile(**json.loads(paths[1].read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def content(self, file_id: str) -> bytes | None:
        paths = self._paths(file_id)
        if paths is None or self.get(file_id) is None:
            return None
        return paths[0].read_bytes()

    def list(self) -> list[StoredFile]:
        files = [self.get(p.stem) for p in self.root.glob("file-*.json")]
        return sorted((f for f in files if f is not None), key=lambda f: (-f.created_at, f.id))

    def delete(self, file_id: str) -> bool:
        paths = self._paths(file_id)
        if paths is None:
            return False
        with self._lock:
            existed = paths[1].exists()
            paths[1].unlink(missing_ok=True)  # the record first: a half-deleted file is simply gone
            paths[0].unlink(missing_ok=True)
        return existed
