"""Load, register and unload adapters against the running engine.

Loading reserves the name in the catalog, validates the folder (``inspect``), loads it into the
engine (so vLLM's own loader has accepted it before any request names it) and only then persists
the entry. Unloading goes through the catalog too: refused while a domain profile names the
adapter, it stops new requests at once and waits (bounded) for the running ones before the engine
drops the weights and an owned folder is deleted; a timeout leaves the adapter loaded (409).

AdaLoRA, LoHa, LoKr and IA3 adapters (uploaded, pointed at, or trained here) are served as LoRA:
a conversion process writes the LoRA and PEFT's own greedy output on the agreement prompts; after
vLLM has loaded the LoRA the same prompts are decoded through it, and below the configured
agreement the load is refused with the numbers (``app.adapters.agreement``). The original PEFT
files are kept beside the LoRA (``peft/``) for the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.adapters import agreement
from app.adapters.conversion import Converter, needs_conversion, read_report
from app.adapters.convert import CONVERTIBLE
from app.adapters.errors import AdapterError
from app.adapters.inspect import CONFIG, WEIGHTS, AdapterInfo, inspect_adapter, peft_type
from app.adapters.registry import AdapterEntry, AdapterRegistry, Source, check_name, resolve_inside
from app.config import ConversionSettings
from app.engine import Engine
from app.engine.base import EngineError, EngineUnavailable

if TYPE_CHECKING:
    from app.catalog import Catalog

log = logging.getLogger(__name__)


def _move_into(incoming: Path, final: Path) -> None:
    """Move a folder into the adapters dir, which may be another filesystem (a shared volume the
    replicas of a fleet mount): copied beside ``final`` first, then renamed, so the replicas never
    see half a folder."""
    try:
        incoming.rename(final)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    staging = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.incoming")
    try:
        shutil.copytree(incoming, staging)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(incoming, ignore_errors=True)


class AdapterService:
    def __init__(
        self,
        registry: AdapterRegistry,
        engine: Callable[[], Engine | None],
        max_bytes: int,
        conversion: ConversionSettings | None = None,
        threads: int = 0,
    ) -> None:
        self.registry = registry
        self._engine = engine
        self.max_bytes = max_bytes
        self.conversion = conversion or ConversionSettings()
        self.converter = Converter(self.conversion, max_bytes, threads)
        #: Set once the catalog exists (it reads this registry): the owner of every name.
        self.catalog: Catalog | None = None

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

    def _creating(self, name: str):
        check_name(name)
        assert self.catalog is not None
        return self.catalog.creating(name, "adapter")

    async def _register(
        self, name: str, folder: Path, source: Source, *, domain: str | None, info: AdapterInfo | None
    ) -> AdapterEntry:
        engine = self.engine()
        if info is None:
            info = await asyncio.to_thread(self._inspect, engine, folder)
        report = await asyncio.to_thread(read_report, folder)
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
            method=report["method"] if report else "lora",
        )
        try:
            await engine.add_adapter(entry.ref(self.root))
        except EngineUnavailable as exc:  # no replica of a fleet serving: nothing wrong with the adapter
            raise AdapterError(503, str(exc), code="engine_unavailable") from exc
        except EngineError as exc:
            raise AdapterError(400, str(exc), code="invalid_adapter", param="path") from exc
        try:
            if report is not None:
                entry.conversion = await self._agree(engine, entry, report)
            await asyncio.to_thread(self.registry.add, entry)
        except BaseException:
            with contextlib.suppress(Exception):
                await engine.remove_adapter(entry.ref(self.root))
            raise
        log.info("adapter %s loaded from %s (rank %d)", name, entry.path, entry.rank)
        return entry

    async def _agree(self, engine: Engine, entry: AdapterEntry, report: dict[str, Any]) -> dict[str, Any]:
        """Decode the agreement prompts through the loaded LoRA; refuse it below the threshold."""
        try:
            result = await agreement.check(engine, entry.ref(self.root), report)
        except EngineUnavailable as exc:
            raise AdapterError(503, str(exc), code="engine_unavailable") from exc
        summary = {k: v for k, v in report.items() if k != "reference"} | result
        floor = self.conversion.min_agreement
        summary["min_agreement"] = floor
        summary["served_by"] = "vllm"
        if floor > 0 and result["agreement"] is not None and result["agreement"] < floor:
            why = (
                f"The {report['method']} adapter converted to a LoRA of rank {report['rank']} "
                f"(fidelity {report['fidelity']:.4f} of the weight-delta energy in the weakest module, "
                f"{report['capped_modules']} of {len(report['modules'])} modules capped at rank "
                f"{report['max_rank']}) agrees with PEFT's own model on {result['tokens_equal']} of "
                f"{result['tokens_total']} greedy tokens ({result['agreement']:.3f}), below the "
                f"required {floor} (TAILOR_CONVERSION__MIN_AGREEMENT)"
            )
            if self.conversion.fallback != "transformers":
                raise AdapterError(
                    400,
                    f"{why}; raising TAILOR_ENGINE__MAX_LORA_RANK lets the conversion keep more, and "
                    "TAILOR_CONVERSION__FALLBACK=transformers serves such adapters with PEFT instead.",
                    code="conversion_disagrees",
                    param="path",
                )
            await self._serve_with_transformers(engine, entry)
            summary["served_by"] = "transformers"
            log.warning("%s; served by PEFT on the transformers path instead", why)
            return summary
        log.info(
            "adapter %s (%s) converted at rank %d, fidelity %.4f, agreement %s",
            entry.name,
            report["method"],
            report["rank"],
            report["fidelity"],
            result["agreement"],
        )
        return summary

    async def _serve_with_transformers(self, engine: Engine, entry: AdapterEntry) -> None:
        """Swap the loaded LoRA for PEFT's own adapter on the engine's transformers path."""
        await engine.remove_adapter(entry.ref(self.root))
        entry.served_by = "transformers"
        try:
            await engine.add_adapter(entry.ref(self.root))
        except EngineError as exc:
            raise AdapterError(
                400,
                f"The converted adapter disagrees with PEFT's own model and this engine cannot serve "
                f"PEFT adapters itself: {exc}",
                code="conversion_disagrees",
                param="path",
            ) from exc

    def _inspect(self, engine: Engine, folder: Path) -> AdapterInfo:
        return inspect_adapter(folder, engine.model, engine.max_lora_rank, self.max_bytes)

    async def load_path(self, name: str, path: str) -> AdapterEntry:
        with self._creating(name):
            folder = resolve_inside(self.root, path)
            if await asyncio.to_thread(peft_type, folder) not in CONVERTIBLE:
                return await self._register(name, folder, "path", domain=None, info=None)
            # another PEFT method: its LoRA conversion is a folder of the service's own
            await asyncio.to_thread(self.converter.check_weights, folder)
            incoming = self.incoming()
            try:
                for fname in (CONFIG, WEIGHTS):
                    if (folder / fname).is_file():
                        await asyncio.to_thread(shutil.copyfile, folder / fname, incoming / fname)
                return await self._adopt(name, incoming, "import", None)
            finally:
                if incoming.exists():
                    await asyncio.to_thread(shutil.rmtree, incoming, True)

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
            with self._creating(name):
                return await self._adopt(name, incoming, source, domain)
        finally:
            if incoming.exists():
                await asyncio.to_thread(shutil.rmtree, incoming, True)

    async def _adopt(self, name: str, incoming: Path, source: Source, domain: str | None) -> AdapterEntry:
        """The callers remove ``incoming`` if it is still there when this returns or fails."""
        final = self.root / name
        if final.exists():
            raise AdapterError(
                409,
                f"A folder named '{name}' already exists in the adapters dir.",
                code="adapter_exists",
                param="name",
            )
        if await asyncio.to_thread(needs_conversion, incoming):
            incoming = await self.converter.convert(self.engine(), incoming, self.incoming, _move_into)
        info = await asyncio.to_thread(self._inspect, self.engine(), incoming)
        await asyncio.to_thread(_move_into, incoming, final)
        try:
            return await self._register(name, final, source, domain=domain, info=info)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, final, True)
            raise
        finally:
            if incoming.exists():  # a conversion's own folder (the caller removes the upload's)
                await asyncio.to_thread(shutil.rmtree, incoming, True)

    async def upload(self, name: str, files: dict[str, bytes]) -> AdapterEntry:
        check_name(name)
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
        with self._creating(name):
            folder = await asyncio.to_thread(self._write_incoming, files)
            try:
                return await self._adopt(name, folder, "upload", None)
            finally:
                if folder.exists():
                    await asyncio.to_thread(shutil.rmtree, folder, True)

    def _write_incoming(self, files: dict[str, bytes]) -> Path:
        """The upload's files in a fresh incoming folder (in a thread: up to the 1 GiB limit)."""
        folder = self.incoming()
        for fname in (CONFIG, WEIGHTS):
            (folder / fname).write_bytes(files[fname])
        return folder

    async def unload(self, name: str, *, force: bool = False) -> tuple[AdapterEntry, list[str]]:
        """Unload through the catalog (refused while referenced or in use); returns the entry and
        the domains ``force`` detached it from."""
        assert self.catalog is not None
        entry = self.registry.get(name)
        detached = await self.catalog.remove("adapter", name, lambda: self._drop(name), force=force)
        assert entry is not None  # remove() answered 404 otherwise
        return entry, detached

    async def _drop(self, name: str) -> None:
        """No request holds the adapter and none can take it: free the weights, entry and folder."""
        entry = self.registry.get(name)
        if entry is None:
            return
        engine = self._engine()
        if engine is not None and engine.ready and engine.max_lora_rank:
            try:
                await engine.remove_adapter(entry.ref(self.root))
            except Exception:  # noqa: BLE001 - the engine may be restarting; nothing is held then
                log.warning("could not drop adapter %s from the engine", entry.name, exc_info=True)
        await asyncio.to_thread(self.registry.remove, name)
        if entry.owned:
            await asyncio.to_thread(shutil.rmtree, self.root / entry.path, True)
        log.info("adapter %s unloaded", name)

    async def restore(self, engine: Engine, *, first: bool) -> None:
        """Register every persisted adapter with the engine that just (re)started.

        Each one is re-checked and loaded explicitly, so a restarted engine serves the same set
        (vLLM would otherwise load by path lazily, from whatever is on disk by then); one that
        fails is set aside with a warning.
        """
        if first:  # uploads and training results a stopped server left half-written
            for leftover in self.root.glob(".incoming-*"):
                await asyncio.to_thread(shutil.rmtree, leftover, True)
        if not engine.max_lora_rank:
            return
        for entry in self.registry.entries():
            try:
                folder = resolve_inside(self.root, entry.path)
                await asyncio.to_thread(self._inspect, engine, folder)
                await engine.add_adapter(entry.ref(self.root))
            except (AdapterError, EngineError) as exc:
                why = exc.message if isinstance(exc, AdapterError) else str(exc)
                await asyncio.to_thread(self.registry.set_aside, entry.name, why)
