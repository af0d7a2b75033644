"""``create_app(settings)``: the FastAPI app and its lifespan (engine start-up and shut-down).

The engine starts in a background task so the server binds at once and answers ``/health`` with
503 while the model loads. Tests pass a running engine in; such an engine is not stopped by the app.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import __version__
from app.adapters.registry import AdapterRegistry
from app.adapters.service import AdapterService
from app.api import (
    adapters,
    admin,
    chat,
    completions,
    documents,
    domains,
    embeddings,
    errors,
    files,
    fine_tuning,
    gate,
    health,
    jobs,
    models,
    soft_prompts,
)
from app.api.browser import BrowserGuard
from app.api.deps import caller_scope
from app.api.middleware import BodyLimit, RequestMetrics
from app.catalog import Catalog, served_name
from app.checkpoints.prepare import DEFAULT_BACKBONE, resolve_backbone, resolve_embedder
from app.config import Settings
from app.console import routes as console_routes
from app.datadir import StateLocks
from app.domains.store import ProfileStore
from app.engine import Engine, build_engine
from app.finetune.files import FileStore
from app.finetune.service import FineTuneError, FineTuner
from app.gate import Gate
from app.jobs import JobManager, JobRunner
from app.knowledge.base import KnowledgeBase
from app.lifecycle import (
    EngineSupervisor,
    FatalHook,
    attach_engine,
    load_embedder,
    restore_adapters,
    start_up,
)
from app.protocol.errors import error_responses
from app.protocol.profiles import DomainProfile
from app.soft_prompt_registry.service import SoftPromptService
from app.state import AppState


def _body_limit(settings: Settings, path: str) -> int:
    """Uploads (documents, adapters, training files) get their limits; every other body the JSON limit."""
    if path.startswith("/v1/domains/") and path.rstrip("/").endswith("/documents"):
        return settings.knowledge.max_upload_bytes
    if path.rstrip("/") == "/v1/adapters":
        return settings.max_adapter_bytes + 1024 * 1024
    if path.rstrip("/") == "/v1/soft-prompts/import":
        return 2 * settings.max_soft_prompt_bytes + 1024 * 1024
    if path.rstrip("/") == "/v1/files":
        return settings.training.max_file_bytes + 64 * 1024
    return settings.max_body_bytes


def _training_base(state: AppState, name: str) -> tuple[str, DomainProfile | None]:
    """What a fine-tuning job's ``model`` names: the base model, or a domain (its profile)."""
    catalog = state.catalog
    if catalog is None or state.engine is None:
        raise FineTuneError(503, "The model is not ready; retry shortly.", code="engine_unavailable")
    if name == catalog.base_name:
        return name, None
    profile = catalog.profile(name)
    if profile is None:
        raise FineTuneError(
            404,
            f"The model '{name}' is neither the base model ({catalog.base_name}) nor a domain.",
            code="model_not_found",
            param="model",
        )
    return catalog.base_name, profile


def create_app(
    settings: Settings,
    engine: Engine | None = None,
    *,
    make_engine: Callable[[], Engine] | None = None,
    on_fatal: FatalHook | None = None,
    data_dir_lock: StateLocks | None = None,
) -> FastAPI:
    """Build the app.

    With ``engine`` given (already started), the app uses it but does not own it. Otherwise it
    starts its own, built by ``make_engine`` (default: the configured backbone), supervised; a
    start that cannot succeed calls ``on_fatal(reason)`` (``tailor serve`` exits with it) and
    leaves /health at 503 ``failed``.

    The app holds its data dir (``app.datadir``): ``tailor serve`` takes the lock before preparing
    the model and hands it in; otherwise the lifespan takes it before anything is opened, and a
    data dir another process holds fails the start-up with ``DataDirBusy``.
    """
    state = AppState(settings=settings, supervised=engine is None)

    def default_engine() -> Engine:
        return build_engine(settings, resolve_backbone(settings.model, settings.data_dir))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned_lock = None
        if data_dir_lock is None or not data_dir_lock.held:
            owned_lock = StateLocks(settings.data_dir, settings.adapters_path).acquire()
        try:
            async with _serving(app):
                yield
        finally:
            if owned_lock is not None:
                owned_lock.release()

    @contextlib.asynccontextmanager
    async def _serving(app: FastAPI) -> AsyncIterator[None]:
        state.knowledge = KnowledgeBase(
            settings.data_dir / "collections", resolve_embedder(settings.embedder), settings.knowledge
        )
        state.jobs = JobManager(settings.data_dir / "jobs.sqlite")
        state.runner = JobRunner(state.jobs)
        state.adapters = AdapterService(
            AdapterRegistry(settings.adapters_path),
            engine=lambda: state.engine,
            max_bytes=settings.max_adapter_bytes,
            conversion=settings.conversion,
            threads=settings.training.threads,
        )
        state.soft_prompts = SoftPromptService(
            settings.soft_prompts_path, max_bytes=settings.max_soft_prompt_bytes
        )
        state.catalog = Catalog(
            profiles=ProfileStore(settings.data_dir / "domains"),
            knowledge=state.knowledge,
            adapters=state.adapters.registry,
            soft_prompts=state.soft_prompts,
            base_name=served_name(settings.model or DEFAULT_BACKBONE, settings.served_model_name),
            drain_timeout_s=settings.drain_timeout_s,
        )
        state.adapters.catalog = state.soft_prompts.catalog = state.catalog
        catalog_ = state.catalog
        state.gate = Gate(
            settings.gate,
            state.knowledge,
            lambda: [p for n in catalog_.domain_names() if (p := catalog_.profile(n)) is not None],
            settings.data_dir / "gate",
        )
        state.files = FileStore(settings.data_dir / "files")
        state.tuner = FineTuner(
            settings,
            state.jobs,
            state.runner,
            state.files,
            state.adapters,
            state.soft_prompts,
            engine=lambda: state.engine,
            resolve_model=lambda name: _training_base(state, name),
            documents=lambda domain, limit: (
                state.knowledge.texts_blocking(domain, limit)
                if state.knowledge is not None and state.knowledge.has(domain)
                else []
            ),
        )
        if engine is not None:
            await restore_adapters(state, engine, first=True)
            attach_engine(state, engine)
            task = asyncio.create_task(load_embedder(state))
            supervisor = None
        else:
            supervisor = EngineSupervisor(state, make_engine or default_engine, on_fatal)
            task = asyncio.create_task(start_up(state, supervisor))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await state.runner.close()
            if supervisor is not None:
                state.engine, state.engine_status = None, "stopped"
                await supervisor.stop()
            await asyncio.to_thread(state.knowledge.close)
            state.jobs.close()

    app = FastAPI(title="Tailor", version=__version__, lifespan=lifespan)
    app.state.tailor = state
    errors.install(app)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(caller_scope)], responses=error_responses())
    for module in (
        chat,
        completions,
        embeddings,
        models,
        domains,
        documents,
        adapters,
        soft_prompts,
        files,
        fine_tuning,
        jobs,
        admin,
        gate,
    ):
        v1.include_router(module.router)
    app.include_router(v1)
    app.include_router(health.router)
    app.include_router(console_routes.router)

    app.add_middleware(BodyLimit, limit_for=lambda path: _body_limit(settings, path))
    if settings.allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["Location"],
        )
    app.add_middleware(BrowserGuard, settings=settings)  # outside CORS: a refused write never runs
    app.add_middleware(RequestMetrics, metrics=state.metrics)
    return app
