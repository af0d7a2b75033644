"""The one typed object an app keeps on ``app.state``: settings, engine, catalog, metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from app.adapters.service import AdapterService
from app.catalog import Catalog
from app.config import Settings
from app.engine import Engine
from app.finetune.files import FileStore
from app.finetune.service import FineTuner
from app.gate import Gate
from app.jobs import JobManager, JobRunner
from app.knowledge.base import KnowledgeBase
from app.serving.metrics import Metrics
from app.soft_prompt_registry.service import SoftPromptService

EngineStatus = Literal["starting", "ready", "restarting", "failed", "stopped"]


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    engine: Engine | None = None
    catalog: Catalog | None = None
    knowledge: KnowledgeBase | None = None
    jobs: JobManager | None = None
    runner: JobRunner | None = None
    adapters: AdapterService | None = None
    soft_prompts: SoftPromptService | None = None
    files: FileStore | None = None
    tuner: FineTuner | None = None
    gate: Gate | None = None
    #: What the engine is doing while it is not serving (set by the start-up task and supervisor).
    engine_status: EngineStatus = "starting"
    #: Why it is not serving: the last start-up failure, in one line.
    engine_reason: str | None = None
    #: Whether a supervisor restarts the engine when it dies (the app owns it).
    supervised: bool = False

    def status(self) -> EngineStatus:
        """'ready', or 'starting' / 'restarting' / 'failed' / 'stopped' (see ``engine_reason``)."""
        if self.engine is not None:
            if self.engine.ready:
                return "ready"
            return "restarting" if self.supervised else "failed"  # until the supervisor notices
        return self.engine_status

    def reason(self) -> str | None:
        if self.engine is not None and not self.engine.ready:
            return self.engine.not_ready_reason()
        return None if self.status() == "ready" else self.engine_reason

    def describe(self) -> str:
        """One phrase for error messages: 'starting', 'failed: <reason>', ..."""
        reason = self.reason()
        return f"{self.status()}: {reason}" if reason else self.status()
