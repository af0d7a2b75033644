"""The domain gate: its state, scoring a text, training it from labelled queries, forgetting it."""

from __future__ import annotations

import asyncio
import shutil
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from app.api.cleanjson import CleanJSONRoute
from app.api.deps import AdminDep, JobsDep, NamesDep, RunnerDep, SettingsDep, StateDep
from app.gate import Gate
from app.gate.training import train_blocking
from app.protocol.errors import APIError
from app.protocol.gate import GateScoreRequest, GateTrainRequest
from app.protocol.jobs import JobPublic, job_public

router = APIRouter(prefix="/gate", route_class=CleanJSONRoute, tags=["gate"])


def get_gate(state: StateDep) -> Gate:
    if state.gate is None:
        raise APIError(503, "The gate is not ready.", code="gate_unavailable")
    return state.gate


GateDep = Annotated[Gate, Depends(get_gate)]


@router.get("")
async def gate_state(gate: GateDep) -> dict[str, Any]:
    """The domains `model: "auto"` chooses among, the thresholds, and the trained gate (if any)."""
    return {"object": "gate", **await asyncio.to_thread(gate.state)}


@router.post("/score")
async def score(body: GateScoreRequest, gate: GateDep, names: NamesDep) -> dict[str, Any]:
    """What the gate decides for `input` (the same decision a request with `model: "auto"` gets)."""
    decision = await asyncio.to_thread(
        gate.decide_blocking, body.input, body.domains, None, trained=body.trained
    )
    served = decision.domain or names.base_name
    return {"object": "gate.decision", **decision.public(served), "seconds": decision.seconds}


@router.post("/train", dependencies=[AdminDep], status_code=202, response_model=JobPublic)
async def train(
    body: GateTrainRequest,
    gate: GateDep,
    names: NamesDep,
    jobs: JobsDep,
    runner: RunnerDep,
    settings: SettingsDep,
) -> JobPublic:
    """Fit the trained gate as a job; the job's `optimization` has held-out accuracy, trained vs similarity."""
    if len(body.examples) > settings.gate.max_training_examples:
        raise APIError(
            400,
            f"At most {settings.gate.max_training_examples} labelled queries (TAILOR_GATE__MAX_TRAINING_EXAMPLES).",
            param="examples",
            code="too_many_examples",
        )
    known = set(await asyncio.to_thread(lambda: [p.name for p in gate.candidates(None)]))
    for i, e in enumerate(body.examples):
        if e.domain is not None and e.domain not in known:
            raise APIError(
                400,
                f"examples[{i}].domain: no domain '{e.domain}' the gate can route to "
                f"(known: {', '.join(sorted(known)) or 'none'}).",
                param=f"examples.{i}.domain",
                code="unknown_domain",
            )
    labelled = {e.domain for e in body.examples}
    if len(labelled) < 2:
        raise APIError(
            400,
            "The examples need at least two labels (two domains, or a domain and null for off-domain).",
            param="examples",
            code="invalid_examples",
        )
    job = jobs.create("optimize", None, {"examples_total": len(body.examples) * 2, "examples_done": 0})

    def progress(done: int, total: int) -> None:
        jobs.update(job, progress={"examples_total": total, "examples_done": done})

    async def run() -> dict:
        result = await asyncio.to_thread(
            train_blocking,
            gate,
            [(e.input, e.domain) for e in body.examples],
            body.holdout,
            body.seed,
            body.apply,
            progress,
        )
        return {"optimization": result}

    runner.start(job, run)
    return job_public(job)


@router.delete("/trained", dependencies=[AdminDep])
async def forget(gate: GateDep) -> dict[str, Any]:
    """Drop the trained gate: similarity only from the next request on."""
    had = gate.classifier is not None
    gate.install(None)
    await asyncio.to_thread(shutil.rmtree, gate.folder, True)
    return {"object": "gate.trained.deleted", "deleted": had}
