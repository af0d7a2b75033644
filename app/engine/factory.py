"""Choose the engine implementation from settings."""

from __future__ import annotations

from app.config import Settings
from app.engine.base import Engine


def build_engine(settings: Settings, model_path: str) -> Engine:
    if settings.engine.backend == "vllm":
        from app.engine.vllm_engine import VLLMEngine

        return VLLMEngine(settings.engine, model_path)
    if settings.engine.backend == "remote":
        from app.fleet.engine import RemoteEngine

        return RemoteEngine(settings.engine, model_path, str(settings.adapters_path))
    raise ValueError(f"unknown engine backend {settings.engine.backend!r}")
