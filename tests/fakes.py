"""Faults the real engine cannot be made to produce on demand, injected around it.

``ScriptedEngine`` delegates to the session's real engine (its tokenizer, window and generation)
but can fail at start, fail a request before or after its first output, or pretend to die. Only
the fault is fake; every request that succeeds runs on the real model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from app.engine import AdapterRef, Engine, EngineInput, EngineRequest, OutputDelta


@dataclass
class Script:
    #: exceptions raised by successive start() calls; an empty list means start succeeds
    start_failures: list[BaseException] = field(default_factory=list)
    #: raised by generate() after ``fail_after`` deltas (0: before any output)
    generate_error: BaseException | None = None
    fail_after: int = 0
    starts: int = 0


class ScriptedEngine(Engine):
    def __init__(self, real: Engine, script: Script) -> None:
        self.real = real
        self.script = script
        self.model = real.model
        self.max_model_len = real.max_model_len
        self.max_lora_rank = real.max_lora_rank
        self.alive = False
        #: Adapters registered with this engine instance (a restart must register them again).
        self.added: list[str] = []

    async def start(self) -> None:
        self.script.starts += 1
        if self.script.start_failures:
            raise self.script.start_failures.pop(0)
        self.alive = True

    async def stop(self) -> None:
        self.alive = False  # the real engine belongs to the test session

    @property
    def ready(self) -> bool:
        return self.alive and self.real.ready

    @property
    def tokenizer(self) -> Any:
        return self.real.tokenizer

    @property
    def tokens(self):
        return self.real.tokens  # the tokenizer has one owner thread, the real engine's

    def stats(self):
        return self.real.stats()

    def describe_window(self) -> dict[str, Any]:
        return self.real.describe_window()

    async def guard_status(self) -> dict[str, Any]:
        return await self.real.guard_status()

    def transformers_overrides(self) -> dict[str, Any]:
        return self.real.transformers_overrides()

    async def continuation_logprob(
        self, prompt: EngineInput, continuation: list[int], request_id: str, adapter: AdapterRef | None = None
    ) -> float:
        return await self.real.continuation_logprob(prompt, continuation, request_id, adapter)

    async def add_adapter(self, adapter: AdapterRef) -> None:
        await self.real.add_adapter(adapter)
        self.added.append(adapter.name)

    async def remove_adapter(self, adapter: AdapterRef) -> None:
        await self.real.remove_adapter(adapter)

    async def generate(self, request: EngineRequest, request_id: str) -> AsyncIterator[list[OutputDelta]]:
        error, sent = self.script.generate_error, 0
        if error is not None and self.script.fail_after == 0:
            raise error
        async for deltas in self.real.generate(request, request_id):
            yield deltas
            sent += 1
            if error is not None and sent >= self.script.fail_after:
                raise error
