"""One process per data dir (``app.datadir``); the LoRA guard fails closed and reports itself."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.datadir import DataDirBusy, DataDirLock, StateLocks
from app.main import create_app

ROOT = Path(__file__).resolve().parent.parent


def test_the_lock_names_its_holder_and_dies_with_it(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from app.datadir import DataDirLock; DataDirLock({str(tmp_path)!r}).acquire(); "
            "print('held', flush=True); import time; time.sleep(60)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataDirBusy) as busy:
            DataDirLock(tmp_path).acquire()
        assert str(busy.value) == f"data dir {tmp_path.resolve()} is in use by pid {holder.pid}"
    finally:
        holder.kill()  # kill -9 releases a flock: no stale lock to clean up
        holder.wait()
    with DataDirLock(tmp_path) as lock:
        assert lock.held and (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    assert (tmp_path / ".lock").read_text() == ""


def test_an_app_does_not_start_on_a_held_data_dir(
    loop, engine, base_settings: Settings, tmp_path: Path
) -> None:
    settings = base_settings.model_copy(update={"data_dir": tmp_path})
    app = create_app(settings, engine=engine)

    async def start_up() -> None:
        async with app.router.lifespan_context(app):
            pass

    with DataDirLock(tmp_path):
        with pytest.raises(DataDirBusy):
            loop.run(start_up(), timeout=60)
        assert not (tmp_path / "jobs.sqlite").exists()  # nothing was written


def test_health_reports_the_guard_from_the_engine_processes(http: httpx.Client, engine) -> None:
    guard = http.get("/health").json()["lora_guard"]
    assert guard["active"] is True and guard["lora"] is True, guard
    # the report comes from the engine core, another process than this one
    assert guard["processes"] and all(p["active"] for p in guard["processes"])
    assert all(p["pid"] != os.getpid() for p in guard["processes"])


def test_the_guard_patches_all_or_nothing_on_an_unknown_vllm() -> None:
    script = textwrap.dedent(
        """
        import vllm
        from vllm.lora.punica_wrapper import punica_cpu
        before = (punica_cpu.bgmv_shrink, punica_cpu.PunicaWrapperCPU.add_lora_linear)
        vllm.__version__ = "0.99.0"
        from app.engine import lora_guard
        lora_guard.install()
        after = (punica_cpu.bgmv_shrink, punica_cpu.PunicaWrapperCPU.add_lora_linear)
        print(lora_guard.status()["active"], before == after, lora_guard.status()["reason"])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    active, untouched, reason = out.stdout.strip().split(" ", 2)
    assert (active, untouched) == ("False", "True") and "0.99.0" in reason
    assert "LoRA guard not installed" in out.stderr


def test_an_adapters_dir_outside_the_data_dir_is_held_too(tmp_path: Path) -> None:
    shared = tmp_path / "shared-adapters"
    first = StateLocks(tmp_path / "one", shared).acquire()
    try:
        with pytest.raises(DataDirBusy, match="adapters dir .* is in use by pid"):
            StateLocks(tmp_path / "two", shared).acquire()
        assert not DataDirLock(tmp_path / "two").acquire().release()  # all or nothing: "two" is free
    finally:
        first.release()
    assert len(StateLocks(tmp_path / "one", tmp_path / "one" / "adapters").locks) == 1
