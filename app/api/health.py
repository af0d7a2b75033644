"""Liveness/readiness and Prometheus metrics (no auth: probes and scrapers call them)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from app.api.cleanjson import CleanJSONRoute
from app.api.deps import StateDep

router = APIRouter(route_class=CleanJSONRoute, tags=["health"])


@router.get("/health", responses={503: {"description": "Starting, restarting or failed, with a reason"}})
async def health(state: StateDep) -> JSONResponse:
    """200 ``ready`` once the engine serves; 503 ``starting``, ``restarting`` or ``failed`` with a reason.

    Ready answers carry the window: ``max_model_len``, the RoPE scaling that gives it, the
    backbone's native window and the KV cache it needs (``window``); and ``lora_guard``: whether
    the engine processes run with the LoRA guard (``active``), as they report it themselves. On a
    fleet (backend remote), ``engine`` lists the replicas with their state and resident adapters;
    the service is ready while at least one replica is healthy. ``knowledge``: the store backend
    and whether it answers (a Milvus that does not is ``unavailable``; the service stays ready, since
    requests without retrieval still work).
    """
    status = state.status()
    engine = state.engine
    if status != "ready" and engine is not None and engine.describe() is not None:
        # a fleet that lost every replica: which, and why, while it probes them
        body = {"status": status, "reason": state.reason(), "engine": engine.describe()}
        return JSONResponse(body, status_code=503)
    if status == "ready" and engine is not None:
        window = engine.describe_window()
        try:
            guard = await engine.guard_status()
        except Exception as exc:  # noqa: BLE001 - health must answer; the failure is the report
            guard = {"active": False, "lora": bool(engine.max_lora_rank), "reason": f"no report: {exc}"}
        body = {
            "status": status,
            "model": state.catalog.base_name if state.catalog else None,
            "max_model_len": window.get("max_model_len"),
            "window": window,
            "lora_guard": guard,
        }
        fleet = engine.describe()
        if fleet is not None:
            body["engine"] = fleet
        if state.knowledge is not None:
            # ready even when the store is down: chat without retrieval still works
            body["knowledge"] = await asyncio.to_thread(state.knowledge.state)
        return JSONResponse(body)
    return JSONResponse({"status": status, "reason": state.reason()}, status_code=503)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(state: StateDep) -> Response:
    extra = state.engine.metrics_text() if state.engine is not None else b""
    return Response(state.metrics.render() + extra, media_type="text/plain; version=0.0.4; charset=utf-8")
