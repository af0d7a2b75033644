"""``POST /v1/completions`` (OpenAI-compatible, streaming with SSE)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.api.cleanjson import CleanJSONRoute
from app.api.deps import CatalogDep, DomainsDep, EngineDep, KnowledgeDep, MetricsDep, SettingsDep
from app.api.streaming import STREAM_RESPONSE, run_until_disconnect, sse_response
from app.protocol.openai import CompletionRequest, CompletionResponse
from app.serving.completions import completion, completion_stream, domain_prompt_text, prepare_completion
from app.serving.rag import retrieve

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
    catalog: CatalogDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    knowledge: KnowledgeDep,
    domains: DomainsDep,
) -> CompletionResponse | StreamingResponse:
    target = catalog.resolve(body.model)
    profile = domains.get(target.domain) if target.domain else None
    hits = await retrieve(knowledge, profile, body.retrieval, domain_prompt_text(body)) if profile else None
    prep = prepare_completion(body, target, engine, settings, profile, hits)
    if body.stream:
        return await sse_response(request, completion_stream(prep, engine, metrics, body.include_usage))
    return await run_until_disconnect(request, completion(prep, engine, metrics))
