"""The one typed object an app keeps on ``app.state``: settings, engine, catalog, metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.config import Settings
from app.domains.registry import DomainRegistry
from app.engine import Engine
from app.jobs import JobManager
from app.knowledge.base import KnowledgeBase
from app.serving.metrics import Metrics
from app.serving.models import ModelCatalog


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    engine: Engine | None = None
    catalog: ModelCatalog | None = None
    knowledge: KnowledgeBase | None = None
    jobs: JobManager | None = None
    domains: DomainRegistry | None = None
    #: Why the engine is not serving (starting, or the start-up error), for /health.
    engine_status: str = "starting"

    def status(self) -> str:
        """'ready', or why the engine is not serving (starting, restarting, failed: ...)."""
        if self.engine is not None:
            return "ready" if self.engine.ready else "unavailable: the engine stopped responding"
        return self.engine_status
