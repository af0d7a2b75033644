"""``create_app(settings)``: the FastAPI app and its lifespan (engine start-up and shut-down).

The engine starts in a background task so the server binds at once and answers ``/health`` with
503 while the model loads. Tests pass a running engine in; such an engine is not stopped by the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Depends, FastAPI

from app import __version__
from app.api import admin, chat, completions, documents, domains, errors, health, jobs, models
from app.api.deps import caller_scope
from app.api.middleware import BodyLimit, RequestMetrics
from app.config import Settings
from app.domains.registry import DomainRegistry
from app.domains.store import ProfileStore
from app.engine import Engine, build_engine
from app.jobs import JobManager
from app.knowledge.base import KnowledgeBase
from app.models.prepare import resolve_backbone, resolve_embedder
from app.serving.models import ModelCatalog, served_name
from app.state import AppState

log = logging.getLogger("tailor")


def _attach_engine(state: AppState, engine: Engine) -> None:
    settings = state.settings
    state.catalog = ModelCatalog(
        base_name=served_name(engine.model, settings.served_model_name),
        base_root=engine.model,
        context_window=engine.max_model_len,
        domains=state.domains.names if state.domains else list,
        has_domain=state.domains.exists if state.domains else (lambda name: False),
    )
    state.engine = engine
    state.metrics.bind_engine_queue(lambda: engine.stats().running_requests)
    state.engine_status = "ready"


async def _start_engine(state: AppState, engine: Engine) -> bool:
    try:
        await engine.start()
    except Exception as exc:  # noqa: BLE001 - reported on /health and in the log
        state.engine_status = f"failed: {type(exc).__name__}: {exc}"
        log.exception("engine failed to start")
        return False
    _attach_engine(state, engine)
    s = state.settings
    name = state.catalog.base_name if state.catalog else ""
    log.info(
        "ready on http://%s:%d - try:\n  curl http://%s:%d/v1/chat/completions -H 'Content-Type: "
        'application/json\' -d \'{"model": "%s", "messages": [{"role": "user", "content": '
        '"What is the capital of France?"}]}\'',
        s.host,
        s.port,
        s.host,
        s.port,
        name,
    )
    return True


class EngineSupervisor:
    """Starts the owned engine and starts a fresh one if it dies (e.g. its core process crashed).

    While it restarts, /health and generation answer 503; requests in flight at the crash fail
    with an error event or a 5xx. Repeated failures back off up to a minute.
    """

    def __init__(self, state: AppState, make: Callable[[], Engine], interval: float = 1.0) -> None:
        self.state = state
        self.make = make
        self.interval = interval
        self.engine: Engine | None = None
        self.restarts = 0

    async def run(self) -> None:
        backoff = 1.0
        while True:
            self.engine = self.make()
            if not await _start_engine(self.state, self.engine):
                return  # a start that fails (bad model, no memory) is not retried: /health says why
            while self.engine.ready:
                await asyncio.sleep(self.interval)
                backoff = 1.0
            dead, self.engine = self.engine, None
            self.state.engine = None
            self.restarts += 1
            log.error("the engine stopped unexpectedly; restarting it (restart %d)", self.restarts)
            self.state.engine_status = f"restarting after an engine failure (restart {self.restarts})"
            with contextlib.suppress(Exception):
                await dead.stop()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 60.0)

    async def stop(self) -> None:
        if self.engine is not None:
            await self.engine.stop()


def _body_limit(settings: Settings, path: str) -> int:
    """Uploads to a domain's documents get the upload limit; every other body the JSON limit."""
    if path.startswith("/v1/domains/") and path.rstrip("/").endswith("/documents"):
        return settings.knowledge.max_upload_bytes
    return settings.max_body_bytes


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    """Build the app. With ``engine`` given (already started), the app uses it but does not own it."""
    state = AppState(settings=settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.knowledge = KnowledgeBase(
            settings.data_dir / "collections", resolve_embedder(settings.embedder), settings.knowledge
        )
        state.jobs = JobManager(settings.data_dir / "jobs.sqlite")
        state.domains = DomainRegistry(ProfileStore(settings.data_dir / "domains"), state.knowledge)
        # load the embedder off the request path, while the engine starts
        warm = asyncio.create_task(asyncio.to_thread(lambda: state.knowledge.embedder))
        try:
            if engine is not None:
                _attach_engine(state, engine)
                yield
                return
            model = resolve_backbone(settings.model, settings.data_dir)
            supervisor = EngineSupervisor(state, lambda: build_engine(settings, model))
            running = asyncio.create_task(supervisor.run())
            try:
                yield
            finally:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
                state.engine = None
                state.engine_status = "stopped"
                await supervisor.stop()
        finally:
            with contextlib.suppress(Exception):
                await warm
            await asyncio.to_thread(state.knowledge.close)
            state.jobs.close()

    app = FastAPI(title="Tailor", version=__version__, lifespan=lifespan)
    app.state.tailor = state
    errors.install(app)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(caller_scope)])
    for module in (chat, completions, models, domains, documents, jobs, admin):
        v1.include_router(module.router)
    app.include_router(v1)
    app.include_router(health.router)

    app.add_middleware(BodyLimit, limit_for=lambda path: _body_limit(settings, path))
    app.add_middleware(RequestMetrics, metrics=state.metrics)
    return app
