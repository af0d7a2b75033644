"""A Tailor server in its own process group, for benchmarks that need a real, cold server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m app.cli serve`` run from ``cwd`` (another checkout runs that checkout's code)."""

    def __init__(self, log: Path, cwd: Path = ROOT, command: str | None = None, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TAILOR_PORT": str(self.port), **env}
        # no shell around the default command: signals sent to ``proc`` must reach the server
        argv: str | list[str] = command or [sys.executable, "-m", "app.cli", "serve"]
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                shell=command is not None,
                cwd=cwd,
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 600) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}; see {self.log}")
            try:
                resp = httpx.get(f"{self.url}/health", timeout=5)
                if resp.status_code == 200:
                    return time.monotonic() - t0
                if resp.json().get("status", "").startswith("failed"):
                    raise RuntimeError(f"server failed to start: {resp.json()}")
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"server not ready in {timeout} s; see {self.log}")

    def processes(self) -> list[psutil.Process]:
        try:
            main = psutil.Process(self.proc.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def usage(self) -> dict:
        """RSS (MiB) and open files of the server and its engine processes: summed, and RSS of each."""
        rss, files, each = 0, 0, {}
        for p in self.processes():
            try:
                mem = p.memory_info().rss
                rss += mem
                files += p.num_fds()
                name = "server" if p.pid == self.proc.pid else p.name()
                each[f"{name}:{p.pid}"] = round(mem / 2**20, 1)
            except psutil.Error:
                pass
        return {"rss_mib": round(rss / 2**20, 1), "open_files": files, "rss_mib_by_process": each}

    def _signal_and_wait(self, send) -> int:
        """Send a signal, wait up to 90 s for the exit, then SIGKILL the whole group."""
        if self.proc.poll() is None:
            send()
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def stop(self) -> int:
        """SIGINT to the whole group, as Ctrl-C in a terminal does."""
        return self._signal_and_wait(lambda: os.killpg(self.proc.pid, signal.SIGINT))

    def terminate(self) -> int:
        """SIGTERM to the server alone, as a process manager sends it; it must stop its engine."""
        return self._signal_and_wait(lambda: self.proc.send_signal(signal.SIGTERM))

    def leftovers(self, grace: float = 30) -> bool:
        """Whether any process of the server's group (engine core, workers) outlived it."""
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return False
            time.sleep(0.2)
        os.killpg(self.proc.pid, signal.SIGKILL)
        return True

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def crash(self) -> None:
        """kill -9 the whole process group at once."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
