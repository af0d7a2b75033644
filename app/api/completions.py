"""``POST /v1/completions`` (OpenAI-compatible, streaming with SSE)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from app.api.cleanjson import CleanJSONRoute
from app.api.deps import EngineDep, MetricsDep, PipelineDep
from app.api.streaming import STREAM_RESPONSE, mark_gate, run_until_disconnect, sse_response
from app.protocol.openai import CompletionRequest, CompletionResponse
from app.serving.completions import completion, completion_stream

router = APIRouter(route_class=CleanJSONRoute, tags=["completions"])


@router.post(
    "/completions",
    response_model=CompletionResponse,
    responses=STREAM_RESPONSE,
)
async def create_completion(
    body: CompletionRequest,
    request: Request,
    engine: EngineDep,
    pipeline: PipelineDep,
    metrics: MetricsDep,
    response: Response,
) -> CompletionResponse | StreamingResponse:
    prep = await pipeline.completion(body)
    assert prep.lease is not None
    if body.stream:
        stream = completion_stream(prep, engine, metrics, body.include_usage)
        return mark_gate(await sse_response(request, stream, prep.lease.release), prep.gate_header)
    mark_gate(response, prep.gate_header)
    with prep.lease:
        return await run_until_disconnect(request, completion(prep, engine, metrics))
