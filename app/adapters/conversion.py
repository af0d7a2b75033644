"""Running a conversion: an imported AdaLoRA / LoHa / LoKr / IA3 folder becomes a LoRA folder.

The arithmetic is ``app.adapters.convert``; the work runs in a child process
(``app.adapters.conversion_worker``) because it loads the backbone a second time with PEFT and
decodes the agreement prompts, and a crash or a runaway must not touch serving. This module owns
what the service asks of it: the rank cap, the checks made before any process reads a file, the
process itself with its deadline, and the report read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.adapters import agreement
from app.adapters.convert import CONVERTIBLE, ORIGINAL, REPORT
from app.adapters.errors import AdapterError
from app.adapters.inspect import PICKLE_WEIGHTS, WEIGHTS, peft_type
from app.config import ConversionSettings
from app.engine import Engine


def read_report(folder: Path) -> dict[str, Any] | None:
    """The conversion report beside a converted LoRA (None for a plain LoRA)."""
    path = folder / REPORT
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterError(
            400, f"{REPORT} is not readable: {exc}", code="invalid_adapter", param="path"
        ) from exc


def needs_conversion(folder: Path) -> bool:
    """A PEFT adapter of another method that has not been converted yet."""
    return peft_type(folder) in CONVERTIBLE and not (folder / REPORT).exists()


class Converter:
    def __init__(self, settings: ConversionSettings, max_bytes: int, threads: int = 0) -> None:
        self.settings = settings
        self.max_bytes = max_bytes
        #: CPU threads of a conversion process (0: half the cores, as the trainer)
        self.threads = threads

    def rank(self, engine: Engine) -> int:
        """The rank cap of a conversion: the configured one, never above what vLLM serves."""
        cap = self.settings.max_rank
        return min(cap, engine.max_lora_rank) if cap else engine.max_lora_rank

    def check_weights(self, folder: Path) -> None:
        """What ``inspect_adapter`` checks of any upload, before a conversion process reads it."""
        pickles = [n for n in PICKLE_WEIGHTS if (folder / n).exists()]
        if pickles:
            raise AdapterError(
                400,
                f"{pickles[0]} is a pickle file, which can run code when loaded: only {WEIGHTS} is accepted.",
                code="unsafe_weights",
                param="path",
            )
        if not (folder / WEIGHTS).is_file():
            raise AdapterError(
                400, f"The adapter folder has no {WEIGHTS}.", code="invalid_adapter", param="path"
            )
        size = (folder / WEIGHTS).stat().st_size
        if size > self.max_bytes:
            raise AdapterError(
                413, f"{WEIGHTS} has {size} bytes; the limit is {self.max_bytes}.", code="adapter_too_large"
            )

    async def convert(
        self,
        engine: Engine,
        incoming: Path,
        fresh_folder: Callable[[], Path],
        move: Callable[[Path, Path], None],
    ) -> Path:
        """Convert the PEFT adapter in ``incoming`` into a LoRA in a fresh folder, the original moved
        into its ``peft/``; returns the new folder (removed again if anything fails)."""
        await asyncio.to_thread(self.check_weights, incoming)
        method = CONVERTIBLE[await asyncio.to_thread(peft_type, incoming)]
        prompts = await asyncio.to_thread(agreement.fixed_prompt_ids, engine, self.settings.prompts)
        out = fresh_folder()
        try:
            await asyncio.to_thread(move, incoming, out / ORIGINAL)
            spec = {
                "model_path": engine.model,
                "config_overrides": engine.transformers_overrides(),
                "peft_dir": str(out / ORIGINAL),
                "output_dir": str(out),
                "method": method,
                "energy": self.settings.energy,
                "max_rank": self.rank(engine),
                "prompts": prompts,
                "max_new_tokens": self.settings.tokens,
                "threads": self.threads or max(1, (os.cpu_count() or 2) // 2),
            }
            await self._run(out, spec)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, out, True)
            raise
        return out

    async def _run(self, out: Path, spec: dict[str, Any]) -> None:
        spec_path = out.parent / f".conversion-{uuid.uuid4().hex[:8]}.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        env["OMP_NUM_THREADS"] = str(spec["threads"])
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "app.adapters.conversion_worker",
                str(spec_path),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            try:
                stdout, stderr = await asyncio.wait_for(proc.communicate(), self.settings.timeout_s)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise
        except asyncio.TimeoutError as exc:
            raise AdapterError(
                400,
                f"Converting the adapter took longer than {self.settings.timeout_s:g} s "
                "(TAILOR_CONVERSION__TIMEOUT_S).",
                code="conversion_failed",
                param="path",
            ) from exc
        finally:
            spec_path.unlink(missing_ok=True)
        if proc.returncode == 0:
            return
        refused = [json.loads(line) for line in stdout.decode().splitlines() if '"refused"' in line]
        if refused:
            why = refused[-1]["message"]
        else:
            lines = [ln for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
            why = lines[-1] if lines else f"the conversion process exited with status {proc.returncode}"
        raise AdapterError(
            400,
            f"The adapter could not be converted to a LoRA for the served backbone: {why}",
            code="conversion_failed",
            param="path",
        )
