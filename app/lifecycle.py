"""Start-up in a fixed order, and a supervisor that keeps the owned engine serving.

Order: import the model libraries once (nothing else runs yet), load the embedder, then start the
engine. Each step holds ``app.loading.LOAD_LOCK`` while it loads, so no two loads interleave in
transformers' lazy imports — the race that left servers dead on busy machines.

A failed first start is retried with backoff when it can be transient; a permanent failure (bad
model path, out of memory, invalid settings) or running out of attempts calls ``on_fatal`` with a
one-line reason, which ``tailor serve`` turns into a non-zero exit. After the engine has served
once, a crash is followed by restarts with backoff for as long as the service runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from app.catalog import served_name
from app.engine import Engine
from app.engine.failures import one_line, start_failure
from app.loading import import_model_libraries
from app.state import AppState

log = logging.getLogger("tailor")

FatalHook = Callable[[str], None]


def attach_engine(state: AppState, engine: Engine) -> None:
    """Make a started engine the one requests use."""
    assert state.catalog is not None
    state.catalog.bind(
        served_name(engine.model, state.settings.served_model_name), engine.model, engine.max_model_len
    )
    state.engine = engine
    state.metrics.bind_engine_queue(lambda: engine.stats().running_requests)
    state.engine_status, state.engine_reason = "ready", None


async def restore_adapters(state: AppState, engine: Engine, *, first: bool) -> None:
    """Register the persisted adapters and soft prompts with the engine that just (re)started.

    Every (re)start registers each one explicitly (failures are set aside); ``first`` also clears
    what a stopped server left half-written.
    """
    if state.soft_prompts is not None:
        try:
            await asyncio.to_thread(state.soft_prompts.restore, engine.model, first=first)
        except Exception:  # noqa: BLE001 - soft prompts must never keep the service from serving
            log.exception("restoring soft prompts failed")
    if state.adapters is None:
        return
    try:
        await state.adapters.restore(engine, first=first)
    except Exception:  # noqa: BLE001 - adapters must never keep the service from serving
        log.exception("restoring adapters failed")


def _announce(state: AppState) -> None:
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


def fail(state: AppState, reason: str, on_fatal: FatalHook | None) -> None:
    state.engine_status, state.engine_reason = "failed", reason
    log.error("cannot start: %s", reason)
    if on_fatal is not None:
        on_fatal(reason)


class EngineSupervisor:
    """Starts the owned engine (retrying what can be transient) and restarts it if it dies."""

    def __init__(
        self,
        state: AppState,
        make: Callable[[], Engine],
        on_fatal: FatalHook | None = None,
        interval: float = 1.0,
    ) -> None:
        self.state = state
        self.make = make
        self.on_fatal = on_fatal
        self.interval = interval
        self.engine: Engine | None = None
        self.restarts = 0
        self._stopping = False

    async def _try_start(self) -> Engine:
        engine = await asyncio.to_thread(self.make)
        self.engine = engine
        try:
            await engine.start()
        except BaseException:
            self.engine = None
            with contextlib.suppress(Exception):
                await engine.stop()
            raise
        return engine

    async def run(self) -> None:
        s = self.state.settings.engine
        attempts, backoff, served, context = 0, s.retry_backoff_s, False, ""
        while True:
            try:
                engine = await self._try_start()
            except Exception as exc:  # noqa: BLE001 - sorted into retry or stop below
                failure = start_failure(exc)
                attempts += 1
                if not served and (failure.permanent or attempts >= s.start_attempts):
                    why = "" if failure.permanent else f" (gave up after {attempts} attempts)"
                    fail(self.state, failure.reason + why, self.on_fatal)
                    return
                self.state.engine_status = "restarting" if served else "starting"
                self.state.engine_reason = (
                    f"{context}attempt {attempts} failed: {failure.reason}; retrying in {backoff:g} s"
                )
                log.warning("engine start failed (%s); retrying in %g s", failure.reason, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, s.retry_backoff_max_s)
                continue
            problem = self._lora_problem(engine)
            if problem:
                with contextlib.suppress(Exception):
                    await engine.stop()
                self.engine = None
                fail(self.state, problem, self.on_fatal)
                return
            # registered before the engine is exposed: no request meets a half-restored engine
            self.state.engine = None
            await self._restore(engine, first=not served)
            attach_engine(self.state, engine)
            _announce(self.state)
            attempts, backoff, served = 0, s.retry_backoff_s, True
            while engine.ready or (engine.self_healing and not self._stopping):
                await asyncio.sleep(self.interval)
            self.state.engine, self.engine = None, None
            self.restarts += 1
            self.state.engine_status = "restarting"
            context = f"the engine stopped unexpectedly (restart {self.restarts}); "
            self.state.engine_reason = context.removesuffix("; ")
            log.error("the engine stopped unexpectedly; restarting it (restart %d)", self.restarts)
            with contextlib.suppress(Exception):
                await engine.stop()

    def _lora_problem(self, engine: Engine) -> str | None:
        """Adapters are registered but the engine serves no LoRA (its guard could not be installed):
        starting would silently drop them, so the start fails with the reason instead."""
        reason = engine.lora_off_reason
        adapters = self.state.adapters
        if reason and adapters is not None and adapters.registry.names():
            return f"{reason}; {len(adapters.registry.names())} adapter(s) are registered"
        return None

    async def _restore(self, engine: Engine, *, first: bool) -> None:
        """Adapters and soft prompts registered with ``engine`` before requests can reach it."""
        await restore_adapters(self.state, engine, first=first)

    async def stop(self) -> None:
        self._stopping = True
        if self.engine is not None:
            await self.engine.stop()


async def load_embedder(state: AppState) -> None:
    """Imports first, then the embedder (under the load lock, see ``KnowledgeBase.embedder``)."""
    assert state.knowledge is not None
    await asyncio.to_thread(import_model_libraries)
    await asyncio.to_thread(lambda: state.knowledge.embedder)


async def start_up(state: AppState, supervisor: EngineSupervisor) -> None:
    """The owned start-up: libraries, embedder, then the supervised engine."""
    try:
        await load_embedder(state)
    except Exception as exc:  # noqa: BLE001 - a missing or broken embedder is a configuration error
        fail(state, f"the embedder could not be loaded: {one_line(exc)}", supervisor.on_fatal)
        return
    await supervisor.run()
