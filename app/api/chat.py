"""``POST /v1/chat/completions`` (OpenAI-compatible, streaming with SSE)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from app.api.cleanjson import CleanJSONRoute
from app.api.deps import EngineDep, MetricsDep, PipelineDep
from app.api.streaming import STREAM_RESPONSE, mark_gate, run_until_disconnect, sse_response
from app.protocol.openai import ChatCompletionRequest, ChatCompletionResponse
from app.serving.chat import chat_completion, chat_stream

router = APIRouter(route_class=CleanJSONRoute, tags=["chat"])


@router.post(
    "/chat/completions",
    response_model=ChatCompletionResponse,
    responses=STREAM_RESPONSE,
)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    engine: EngineDep,
    pipeline: PipelineDep,
    metrics: MetricsDep,
    response: Response,
) -> ChatCompletionResponse | StreamingResponse:
    prep = await pipeline.chat(body)
    assert prep.lease is not None
    if body.stream:
        stream = chat_stream(prep, engine, metrics, body.include_usage)
        return mark_gate(await sse_response(request, stream, prep.lease.release), prep.gate_header)
    mark_gate(response, prep.gate_header)
    with prep.lease:
        return await run_until_disconnect(request, chat_completion(prep, engine, metrics))
