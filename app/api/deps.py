"""FastAPI dependencies as ``Annotated`` aliases: state, ready engine, auth scopes."""

from __future__ import annotations

import hmac
from typing import Annotated, Literal

from fastapi import Depends, Request

from app.catalog import Catalog
from app.config import Settings
from app.engine import Engine
from app.jobs import JobManager, JobRunner
from app.knowledge.base import KnowledgeBase
from app.protocol.errors import APIError
from app.serving.metrics import Metrics
from app.serving.pipeline import Pipeline
from app.state import AppState

Scope = Literal["query", "admin"]


def get_state(request: Request) -> AppState:
    return request.app.state.tailor


StateDep = Annotated[AppState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


def get_metrics(state: StateDep) -> Metrics:
    return state.metrics


def get_engine(state: StateDep) -> Engine:
    engine = state.engine
    if engine is None or not engine.ready:
        raise APIError(
            503, f"The model is not ready ({state.describe()}). Retry shortly.", code="engine_unavailable"
        )
    return engine


def get_names(state: StateDep) -> Catalog:
    """The catalog, before the engine is ready too (domains and documents need no engine)."""
    if state.catalog is None:
        raise APIError(503, "The catalog is not ready.", code="catalog_unavailable")
    return state.catalog


def get_catalog(
    names: Annotated[Catalog, Depends(get_names)], engine: Annotated[Engine, Depends(get_engine)]
) -> Catalog:
    """The catalog once the engine is ready (it then knows the served backbone's name)."""
    return names


def get_knowledge(state: StateDep) -> KnowledgeBase:
    if state.knowledge is None:
        raise APIError(503, "The knowledge store is not ready.", code="knowledge_unavailable")
    return state.knowledge


def get_jobs(state: StateDep) -> JobManager:
    if state.jobs is None:
        raise APIError(503, "The job store is not ready.", code="jobs_unavailable")
    return state.jobs


def get_runner(state: StateDep) -> JobRunner:
    if state.runner is None:
        raise APIError(503, "The job runner is not ready.", code="jobs_unavailable")
    return state.runner


SettingsDep = Annotated[Settings, Depends(get_settings)]
NamesDep = Annotated[Catalog, Depends(get_names)]
KnowledgeDep = Annotated[KnowledgeBase, Depends(get_knowledge)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
RunnerDep = Annotated[JobRunner, Depends(get_runner)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
EngineDep = Annotated[Engine, Depends(get_engine)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]


def get_pipeline(
    engine: EngineDep,
    catalog: CatalogDep,
    knowledge: KnowledgeDep,
    settings: SettingsDep,
    state: StateDep,
) -> Pipeline:
    return Pipeline(engine, catalog, knowledge, settings, state.gate, state.metrics)


PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]


def _matches(key: str, keys: list[str]) -> bool:
    # compare against every key in constant time so timing reveals nothing about which matched
    found = False
    for k in keys:
        found |= hmac.compare_digest(key.encode(), k.encode())
    return found


def caller_scope(request: Request, settings: SettingsDep) -> Scope:
    """The caller's scope from its bearer key; everyone is admin when no keys are configured."""
    if not settings.auth_enabled:
        return "admin"
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise APIError(401, "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key")
    key = key.strip()
    if _matches(key, settings.admin_keys):
        return "admin"
    if _matches(key, settings.api_keys):
        return "query"
    raise APIError(401, "Invalid API key.", code="invalid_api_key")


def require_admin(scope: Annotated[Scope, Depends(caller_scope)]) -> None:
    if scope != "admin":
        raise APIError(403, "This route needs an admin key.", code="admin_required")


AdminDep = Depends(require_admin)
