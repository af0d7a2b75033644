"""Soft prompts served by name: each one a folder under ``<data dir>/soft_prompts/<name>``.

The folder (``soft_prompts.store``) is the record: config, tensor, the backbone's fingerprint and
provenance (source, domain, job) — no separate index to drift from it. At start-up every folder
is read and checked against the served backbone (again after every engine restart); one that
fails (another model, a corrupt file) is set aside with a warning instead of stopping the service.
Tensors stay in memory (kilobytes to a few megabytes each). Names are the catalog's: a create
reserves the name there first, a delete goes through it (refused while a domain names the prompt).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.adapters.registry import NAME  # adapters and soft prompts share one namespace of model names
from app.engine import SoftPromptRef
from app.errors import ServiceError
from soft_prompts import Fingerprint, SoftPrompt, SoftPromptError, fingerprint_of, import_peft, load, save

if TYPE_CHECKING:
    from app.catalog import Catalog

log = logging.getLogger(__name__)

_ids = itertools.count(1)


class SoftPromptProblem(ServiceError):
    """A refused soft-prompt operation; ``status`` is the HTTP status."""


@dataclass(frozen=True)
class SoftPromptEntry:
    name: str
    prompt: SoftPrompt
    ref: SoftPromptRef
    size_bytes: int

    @property
    def method(self) -> str:
        return self.prompt.config.method

    @property
    def source(self) -> str:
        return str(self.prompt.meta.get("source", "import"))

    @property
    def domain(self) -> str | None:
        return self.prompt.meta.get("domain")

    @property
    def created_at(self) -> float:
        return float(self.prompt.meta.get("created_at", 0.0))


def check_name(name: str) -> str:
    if not NAME.fullmatch(name or ""):
        raise SoftPromptProblem(
            400,
            f"Invalid soft prompt name {name!r}: use 1-64 characters a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit.",
            code="invalid_name",
            param="name",
        )
    return name


class SoftPromptService:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        #: Set once the catalog exists (it reads this service): the owner of every name.
        self.catalog: Catalog | None = None
        self.max_bytes = max_bytes
        self._entries: dict[str, SoftPromptEntry] = {}
        self._lock = threading.Lock()
        self.served: Fingerprint | None = None
        self.warnings: dict[str, str] = {}

    # -- reading -------------------------------------------------------------------------------
    def get(self, name: str) -> SoftPromptEntry | None:
        return self._entries.get(name)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[SoftPromptEntry]:
        return [self._entries[n] for n in self.names()]

    def _entry(self, name: str, prompt: SoftPrompt) -> SoftPromptEntry:
        ref = SoftPromptRef(name, next(_ids), prompt.spec.serving, prompt.tensor)
        size = sum(f.stat().st_size for f in (self.root / name).iterdir() if f.is_file())
        return SoftPromptEntry(name, prompt, ref, size)

    def restore(self, model_path: str, *, first: bool = True) -> None:
        """Read every saved prompt and check it against the served backbone (blocking: call in a thread).

        Called at every engine (re)start; ``first`` also clears what a stopped server left half-done.
        """
        self.served = fingerprint_of(model_path)
        entries: dict[str, SoftPromptEntry] = {}
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            if not NAME.fullmatch(folder.name):
                continue
            try:
                entries[folder.name] = self._entry(folder.name, load(folder, self.served))
            except (SoftPromptError, OSError) as exc:
                aside = self.root / f".unusable-{folder.name}-{int(time.time())}"
                os.replace(folder, aside)
                self.warnings[folder.name] = f"soft prompt '{folder.name}' set aside as {aside.name}: {exc}"
                log.warning(self.warnings[folder.name])
        with self._lock:
            self._entries = entries
        if not first:
            return
        for pattern in (".*.tmp-*", ".*.old-*", ".deleted-*"):
            for folder in self.root.glob(pattern):
                shutil.rmtree(folder, ignore_errors=True)  # a save or delete interrupted by a crash

    # -- writing -------------------------------------------------------------------------------
    def _fingerprint(self) -> Fingerprint:
        if self.served is None:
            raise SoftPromptProblem(503, "The model is not ready; retry shortly.", code="engine_unavailable")
        return self.served

    def _creating(self, name: str):
        check_name(name)
        assert self.catalog is not None
        return self.catalog.creating(name, "soft_prompt")

    def _register(self, name: str, prompt: SoftPrompt) -> SoftPromptEntry:
        with self._lock:
            entry = self._entry(name, prompt)
            self._entries[name] = entry
        log.info(
            "soft prompt '%s' registered (%s, %d virtual tokens)",
            name,
            prompt.config.method,
            prompt.num_virtual_tokens,
        )
        return entry

    def _save(self, name: str, prompt: SoftPrompt, meta: dict) -> SoftPromptEntry:
        """Write and register (blocking); the caller holds the name in the catalog."""
        prompt.meta = {**prompt.meta, **meta, "created_at": time.time()}
        save(prompt, self.root / name)
        return self._register(name, prompt)

    async def import_files(self, name: str, files: dict[str, bytes]) -> SoftPromptEntry:
        """A PEFT prompt-learning adapter: ``adapter_config.json`` + ``adapter_model.safetensors``."""
        with self._creating(name):
            return await self._import(name, files)

    async def _import(self, name: str, files: dict[str, bytes]) -> SoftPromptEntry:
        served = self._fingerprint()
        unexpected = sorted(set(files) - {"adapter_config.json", "adapter_model.safetensors", "README.md"})
        if unexpected or "adapter_config.json" not in files or "adapter_model.safetensors" not in files:
            raise SoftPromptProblem(
                400,
                "Upload a PEFT prompt-learning adapter: adapter_config.json and adapter_model.safetensors"
                + (
                    f" (unexpected: {', '.join(unexpected)}; only safetensors weights are read)"
                    if unexpected
                    else ""
                ),
                code="invalid_soft_prompt",
                param="files",
            )
        try:
            config = json.loads(files["adapter_config.json"])
            if not isinstance(config, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            raise SoftPromptProblem(
                400,
                f"adapter_config.json is not valid JSON: {exc}",
                code="invalid_soft_prompt",
                param="files",
            ) from exc
        try:
            prompt = await asyncio.to_thread(import_peft, config, files["adapter_model.safetensors"], served)
        except SoftPromptError as exc:
            raise SoftPromptProblem(
                400, f"Cannot import: {exc}.", code="invalid_soft_prompt", param="files"
            ) from exc
        return await asyncio.to_thread(self._save, name, prompt, {"source": "import"})

    def adopt(self, name: str, folder: Path, meta: dict) -> SoftPromptEntry:
        """A trained prompt written by the trainer: validated against the served backbone, then moved in."""
        with self._creating(name):
            return self._adopt(name, folder, meta)

    def _adopt(self, name: str, folder: Path, meta: dict) -> SoftPromptEntry:
        try:
            prompt = load(folder, self._fingerprint())
        except SoftPromptError as exc:
            raise SoftPromptProblem(
                500, f"the trained soft prompt is unusable: {exc}", code="training_failed"
            ) from exc
        return self._save(name, prompt, meta)

    async def delete(self, name: str, *, force: bool = False) -> tuple[SoftPromptEntry, list[str]]:
        """Delete through the catalog (refused while a domain names it); returns the entry and the
        domains ``force`` detached it from."""
        assert self.catalog is not None
        entry = self._entries.get(name)
        detached = await self.catalog.remove(
            "soft_prompt", name, lambda: asyncio.to_thread(self._drop, name), force=force
        )
        assert entry is not None  # remove() answered 404 otherwise
        return entry, detached

    def _drop(self, name: str) -> None:
        gone = self.root / f".deleted-{name}-{uuid.uuid4().hex[:6]}"
        os.replace(self.root / name, gone)
        with self._lock:
            self._entries.pop(name, None)
        shutil.rmtree(gone, ignore_errors=True)
        log.info("soft prompt '%s' deleted", name)
