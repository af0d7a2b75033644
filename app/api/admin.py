"""Admin-only routes. ``GET /v1/admin/config``: the effective settings, keys redacted."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.cleanjson import CleanJSONRoute
from app.api.deps import AdminDep, StateDep

router = APIRouter(route_class=CleanJSONRoute, prefix="/admin", tags=["admin"], dependencies=[AdminDep])


@router.get("/config")
async def effective_config(state: StateDep) -> dict[str, Any]:
    data = state.settings.model_dump(mode="json")
    data["api_keys"] = f"{len(state.settings.api_keys)} configured"
    data["admin_keys"] = f"{len(state.settings.admin_keys)} configured"
    engine = state.engine
    data["engine_state"] = {
        "status": state.status(),
        "reason": state.reason(),
        "model": engine.model if engine else None,
        "max_model_len": engine.max_model_len if engine else None,
        "window": engine.describe_window() if engine else None,
        "running_requests": engine.stats().running_requests if engine else 0,
    }
    return data
