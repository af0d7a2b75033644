"""``POST /v1/chat/completions`` (OpenAI-compatible, streaming with SSE)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.api.cleanjson import CleanJSONRoute
from app.api.deps import CatalogDep, DomainsDep, EngineDep, KnowledgeDep, MetricsDep, SettingsDep
from app.api.streaming import STREAM_RESPONSE, run_until_disconnect, sse_response
from app.protocol.openai import ChatCompletionRequest, ChatCompletionResponse
from app.serving.chat import chat_completion, chat_stream, last_user_text, prepare_chat
from app.serving.rag import retrieve

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
    catalog: CatalogDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    knowledge: KnowledgeDep,
    domains: DomainsDep,
) -> ChatCompletionResponse | StreamingResponse:
    target = catalog.resolve(body.model)
    profile = domains.get(target.domain) if target.domain else None
    hits = await retrieve(knowledge, profile, body.retrieval, last_user_text(body)) if profile else None
    prep = prepare_chat(body, target, engine, settings, profile, hits)
    if body.stream:
        return await sse_response(request, chat_stream(prep, engine, metrics, body.include_usage))
    return await run_until_disconnect(request, chat_completion(prep, engine, metrics))
