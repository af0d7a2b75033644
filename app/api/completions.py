"""``POST /v1/completions`` (OpenAI-compatible, streaming with SSE)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.api.deps import CatalogDep, EngineDep, KnowledgeDep, MetricsDep, SettingsDep
from app.api.streaming import run_until_disconnect, sse_response
from app.protocol.errors import ErrorResponse
from app.protocol.openai import CompletionRequest, CompletionResponse
from app.serving.completions import completion, completion_stream, domain_prompt_text, prepare_completion
from app.serving.rag import retrieve

router = APIRouter(tags=["completions"])


@router.post(
    "/completions",
    response_model=CompletionResponse,
    responses={400: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
)
async def create_completion(
    body: CompletionRequest,
    request: Request,
    engine: EngineDep,
    catalog: CatalogDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    knowledge: KnowledgeDep,
) -> CompletionResponse | StreamingResponse:
    target = catalog.resolve(body.model)
    hits = (
        await retrieve(knowledge, target.domain, domain_prompt_text(body), settings)
        if target.domain
        else None
    )
    prep = prepare_completion(body, target, engine, settings, hits)
    if body.stream:
        return sse_response(completion_stream(prep, engine, metrics, body.include_usage))
    return await run_until_disconnect(request, completion(prep, engine, metrics))
