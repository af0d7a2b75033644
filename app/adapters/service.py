"""Load, register and unload adapters against the running engine.

Loading validates the folder (``inspect``), loads it into the engine (so vLLM's own loader has
accepted it before any request names it) and only then persists the entry. Unloading removes the
name at once (new requests get 404) and lets requests already using it finish before the engine
drops the weights and an owned folder is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from app.adapters.errors import AdapterError
from app.adapters.inspect import CONFIG, WEIGHTS, AdapterInfo, inspect_adapter
from app.adapters.registry import AdapterEntry, AdapterRegistry, Source, check_name, resolve_inside
from app.engine import Engine
from app.engine.base import EngineError

log = logging.getLogger(__name__)


class AdapterService:
    def __init__(
        self,
        registry: AdapterRegistry,
        engine: Callable[[], Engine | None],
        name_taken: Callable[[str], str | None],
        max_bytes: int,
    ) -> None:
        self.registry = registry
        self._engine = engine
        self._name_taken = name_taken
        self.max_bytes = max_bytes
        self._draining: set[asyncio.Task] = set()

    @property
    def root(self) -> Path:
        return self.registry.root

    def engine(self) -> Engine:
        engine = self._engine()
        if engine is None or not engine.ready:
            raise AdapterError(503, "The model is not ready; retry shortly.", code="engine_unavailable")
        if not engine.max_lora_rank:
            raise AdapterError(
                400, "LoRA is turned off on this server (TAILOR_ENGINE__MAX_LORAS=0).", code="lora_disabled"
            )
        return engine

    def _check_free(self, name: str) -> None:
        check_name(name)
        if self.registry.get(name) is not None:
            raise AdapterError(
                409,
                f"An adapter named '{name}' is already loaded; unload it first.",
                code="adapter_exists",
                param="name",
            )
        taken = self._name_taken(name)
        if taken:
            raise AdapterError(
                409, f"'{name}' is already the name of {taken}.", code="name_taken", param="name"
            )

    async def register(
        self,
        name: str,
        folder: Path,
        source: Source,
        *,
        domain: str | None = None,
        info: AdapterInfo | None = None,
    ) -> AdapterEntry:
        """Validate ``folder`` (inside the adapters dir; ``info`` when already validated), load it
        into the engine and persist it."""
        self._check_free(name)
        engine = self.engine()
        if info is None:
            info = await asyncio.to_thread(self._inspect, engine, folder)
        entry = AdapterEntry(
            name=name,
            path=str(folder.resolve().relative_to(self.root.resolve())),
            source=source,
            rank=info.rank,
            alpha=info.alpha,
            target_modules=info.target_modules,
            size_bytes=info.size_bytes,
            base_model=info.base_model,
            domain=domain,
        )
        try:
            await engine.add_adapter(entry.ref(self.root))
        except EngineError as exc:
            raise AdapterError(400, str(exc), code="invalid_adapter", param="path") from exc
        try:
            await asyncio.to_thread(self.registry.add, entry)
        except BaseException:
            with contextlib.suppress(Exception):
                await engine.remove_adapter(entry.ref(self.root))
            raise
        log.info("adapter %s loaded from %s (rank %d)", name, entry.path, entry.rank)
        return entry

    def _inspect(self, engine: Engine, folder: Path) -> AdapterInfo:
        return inspect_adapter(folder, engine.model, engine.max_lora_rank, self.max_bytes)

    async def load_path(self, name: str, path: str) -> AdapterEntry:
        self._check_free(name)
        folder = resolve_inside(self.root, path)
        return await self.register(name, folder, "path")

    def incoming(self) -> Path:
        """A fresh folder for an upload or a training result, renamed into place once valid."""
        folder = self.root / f".incoming-{uuid.uuid4().hex}"
        folder.mkdir(parents=True)
        return folder

    async def adopt(
        self, name: str, incoming: Path, source: Source, *, domain: str | None = None
    ) -> AdapterEntry:
        """Move a validated incoming folder to ``<adapters dir>/<name>`` and register it.

        Anything that fails leaves neither a folder nor an entry behind.
        """
        try:
            self._check_free(name)
            final = self.root / name
            if final.exists():
                raise AdapterError(
                    409,
                    f"A folder named '{name}' already exists in the adapters dir.",
                    code="adapter_exists",
                    param="name",
                )
            info = await asyncio.to_thread(self._inspect, self.engine(), incoming)
            incoming.rename(final)
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        try:
            return await self.register(name, final, source, domain=domain, info=info)
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise

    async def upload(self, name: str, files: dict[str, bytes]) -> AdapterEntry:
        self._check_free(name)
        unknown = sorted(set(files) - {CONFIG, WEIGHTS, "README.md"})
        if unknown:
            raise AdapterError(
                422,
                f"Unexpected file '{unknown[0]}': upload {CONFIG} and {WEIGHTS} (pickle .bin weights "
                "are refused).",
                code="invalid_adapter",
                param="files",
            )
        missing = [n for n in (CONFIG, WEIGHTS) if n not in files]
        if missing:
            raise AdapterError(422, f"The upload has no {missing[0]}.", code="invalid_adapter", param="files")
        folder = self.incoming()
        for fname in (CONFIG, WEIGHTS):
            (folder / fname).write_bytes(files[fname])
        return await self.adopt(name, folder, "upload")

    async def unload(self, name: str) -> AdapterEntry:
        entry = self.registry.get(name)
        if entry is None:
            raise AdapterError(404, f"No adapter named '{name}'.", code="adapter_not_found", param="name")
        await asyncio.to_thread(self.registry.remove, name)
        task = asyncio.create_task(self._drain(entry))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)
        return entry

    async def _drain(self, entry: AdapterEntry) -> None:
        """Wait for requests still using the adapter, then free its weights and owned folder."""
        engine = self._engine()
        if engine is not None:
            try:
                await engine.remove_adapter(entry.ref(self.root))
            except Exception:  # noqa: BLE001 - the engine may be restarting; nothing is held then
                log.warning("could not drop adapter %s from the engine", entry.name, exc_info=True)
        if entry.owned:
            await asyncio.to_thread(shutil.rmtree, self.root / entry.path, True)

    async def restore(self) -> None:
        """Re-check persisted adapters against the engine that just started; set aside failures."""
        engine = self._engine()
        if engine is None or not engine.max_lora_rank:
            return
        for entry in self.registry.entries():
            try:
                folder = resolve_inside(self.root, entry.path)
                await asyncio.to_thread(self._inspect, engine, folder)
            except AdapterError as exc:
                await asyncio.to_thread(self.registry.set_aside, entry.name, exc.message)
        for leftover in self.root.glob(".incoming-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    async def close(self) -> None:
        for task in list(self._draining):
            task.cancel()
        await asyncio.gather(*self._draining, return_exceptions=True)
