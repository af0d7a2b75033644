"""Run real uvicorn servers for tests on one background event loop.

The vLLM engine is bound to the event loop it first runs on, so the session's engine and every app
that shares it (apps with other settings, e.g. API keys) are served from the same loop thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class Server:
    url: str
    server: uvicorn.Server
    future: Any
    data_dir: Any = None
    stopped: bool = False

    def stop(self) -> None:
        """Shut the app down (lifespan included: its data dir is released) and wait for it."""
        if self.stopped:
            return
        self.server.should_exit = True
        self.future.result(30)
        self.stopped = True


def serve(loop: LoopThread, app: FastAPI) -> Server:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    future = asyncio.run_coroutine_threadsafe(server.serve(), loop.loop)
    deadline = time.monotonic() + 60
    while not server.started:
        if future.done():
            future.result()  # raises the start-up error
        if time.monotonic() > deadline:
            raise TimeoutError("test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return Server(f"http://127.0.0.1:{port}", server, future)


def wait_job(http: httpx.Client, job: dict, timeout: float = 300) -> dict:
    """Poll ``GET /v1/jobs/{id}`` until the job leaves queued/running (or ``timeout`` passes)."""
    deadline = time.monotonic() + timeout
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.3)
        job = http.get(f"/v1/jobs/{job['id']}").json()
    return job
