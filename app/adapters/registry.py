"""The adapters served by name, persisted in ``<adapters dir>/registry.json`` (written atomically).

Every entry points at a folder inside the adapters dir. Folders the service created (uploads,
fine-tuning results) are removed with their entry; folders a client pointed at are left alone.
An entry whose folder went missing or stopped validating is set aside at start-up with a warning
instead of stopping the service.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from app.adapters.errors import AdapterError
from app.engine import AdapterRef
from indexers.durable import write_text_durably

log = logging.getLogger(__name__)

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
#: path: a client's folder, served as it is; upload / fine-tune / import (a client's folder of another
#: PEFT method, converted into a folder of the service's own): folders the service owns.
Source = Literal["path", "upload", "fine-tune", "import"]
_ids = itertools.count(1)  # engine ids: unique per registration, so replaced weights are reloaded


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise AdapterError(
            400,
            f"Invalid adapter name {name!r}: use 1-64 characters a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit.",
            code="invalid_name",
            param="name",
        )
    return name


@dataclass
class AdapterEntry:
    name: str
    #: Folder relative to the adapters dir.
    path: str
    source: Source
    rank: int
    alpha: float
    target_modules: list[str]
    size_bytes: int
    base_model: str | None = None
    #: A domain whose profile formatted the training data: requests to the adapter use it too.
    domain: str | None = None
    #: The PEFT method trained: lora, or adalora / loha / lokr / ia3 served through a conversion.
    method: str = "lora"
    #: A converted adapter's report: rank per module, fidelity, agreement with PEFT's own model.
    conversion: dict | None = None
    #: vllm (LoRA, converted or not) or transformers (PEFT's own model beside vLLM: a conversion
    #: that fell below the agreement bar, with TAILOR_CONVERSION__FALLBACK=transformers).
    served_by: str = "vllm"
    created_at: float = field(default_factory=time.time)
    engine_id: int = field(default_factory=lambda: next(_ids))

    def ref(self, root: Path) -> AdapterRef:
        peft = str(root / self.path / "peft") if self.served_by == "transformers" else None
        return AdapterRef(self.name, self.engine_id, str(root / self.path), peft)

    @property
    def owned(self) -> bool:
        """Whether the service created the folder (and so deletes it with the entry)."""
        return self.source != "path"


def resolve_inside(root: Path, path: str) -> Path:
    """``path`` (relative to ``root``, or absolute) as a folder inside ``root``; symlinks followed."""
    if not path or "\x00" in path:
        raise AdapterError(400, "The adapter path is empty.", code="invalid_path", param="path")
    raw = Path(path)
    if ".." in raw.parts:
        raise AdapterError(400, "The adapter path may not contain '..'.", code="invalid_path", param="path")
    base = root.resolve()
    candidate = (raw if raw.is_absolute() else base / raw).resolve()
    if candidate != base and base not in candidate.parents:
        raise AdapterError(
            400,
            "The adapter path must be inside the adapters dir (TAILOR_ADAPTERS_DIR); a symlink "
            "may not lead out of it.",
            code="path_outside_adapters_dir",
            param="path",
        )
    if not candidate.is_dir():
        raise AdapterError(
            404,
            f"No adapter folder at '{path}' in the adapters dir.",
            code="adapter_path_not_found",
            param="path",
        )
    for child in candidate.iterdir():
        target = child.resolve()
        if base not in target.parents:
            raise AdapterError(
                400,
                f"'{child.name}' is a symlink leading out of the adapters dir.",
                code="path_outside_adapters_dir",
                param="path",
            )
    return candidate


class AdapterRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._file = root / "registry.json"
        self._lock = threading.Lock()
        self._entries: dict[str, AdapterEntry] = {}
        self.warnings: dict[str, str] = {}
        self._read()

    def _read(self) -> None:
        if not self._file.exists():
            return
        try:
            raw = json.loads(self._file.read_text(encoding="utf-8"))
            for item in raw.get("adapters", []):
                item.pop("engine_id", None)
                entry = AdapterEntry(**item)
                self._entries[entry.name] = entry
        except (OSError, ValueError, TypeError) as exc:
            aside = self._file.with_name(f"registry.json.unreadable-{int(time.time())}")
            os.replace(self._file, aside)
            self.warnings["registry.json"] = f"unreadable adapter registry set aside as {aside.name}: {exc}"
            log.warning(self.warnings["registry.json"])

    def _write(self) -> None:
        data = {"adapters": [{**asdict(e), "engine_id": None} for e in self._entries.values()]}
        write_text_durably(self._file, json.dumps(data, indent=2, sort_keys=True))

    def get(self, name: str) -> AdapterEntry | None:
        return self._entries.get(name)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[AdapterEntry]:
        return [self._entries[n] for n in self.names()]

    def add(self, entry: AdapterEntry) -> None:
        with self._lock:
            if entry.name in self._entries:
                raise AdapterError(
                    409,
                    f"An adapter named '{entry.name}' is already loaded; unload it first.",
                    code="adapter_exists",
                    param="name",
                )
            self._entries[entry.name] = entry
            try:
                self._write()
            except BaseException:
                del self._entries[entry.name]
                raise

    def remove(self, name: str) -> AdapterEntry | None:
        with self._lock:
            entry = self._entries.pop(name, None)
            if entry is not None:
                self._write()
            return entry

    def set_aside(self, name: str, reason: str) -> None:
        """Drop an entry that no longer validates, remembering why (shown in ``GET /v1/adapters``)."""
        with self._lock:
            if self._entries.pop(name, None) is not None:
                self._write()
        self.warnings[name] = f"adapter '{name}' set aside: {reason}"
        log.warning(self.warnings[name])
