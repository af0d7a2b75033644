"""``/v1/chat/completions``: messages → chat template → engine → OpenAI response or stream."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from app.config import Settings
from app.engine import Engine, EngineInput, SamplingOptions
from app.protocol.documents import Source
from app.protocol.openai import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    Usage,
    new_id,
)
from app.serving.generation import (
    check_prompt_fits,
    collect,
    reject_unsupported,
    sampling_options,
    stream_deltas,
)
from app.serving.metrics import Metrics
from app.serving.models import Target
from app.serving.rag import passages, sources
from app.serving.sse import event
from indexers.store import SearchHit
from prompts import rag, render_chat

_ROLE_MAP = {"developer": "system"}


@dataclass
class PreparedChat:
    model: str
    prompt: EngineInput
    options: SamplingOptions
    sources: list[Source] | None = None


def _with_knowledge(
    messages: list[dict[str, str]], domain: str, hits: list[SearchHit]
) -> list[dict[str, str]]:
    """Server system prompt first; the passages and the question in the last user turn."""
    client_system = "\n\n".join(m["content"] for m in messages if m["role"] == "system") or None
    rest = [m for m in messages if m["role"] != "system"]
    last_user = max(i for i, m in enumerate(rest) if m["role"] == "user")
    rest[last_user] = {"role": "user", "content": rag.user_turn(rest[last_user]["content"], passages(hits))}
    return [{"role": "system", "content": rag.system_prompt(domain, client_system)}, *rest]


def last_user_text(req: ChatCompletionRequest) -> str:
    return next((m.text() for m in reversed(req.messages) if m.role == "user"), "")


def prepare_chat(
    req: ChatCompletionRequest,
    target: Target,
    engine: Engine,
    settings: Settings,
    hits: list[SearchHit] | None = None,
) -> PreparedChat:
    reject_unsupported(
        req,
        {
            "tools": bool(req.tools),
            "tool_choice": req.tool_choice not in (None, "none"),
            "response_format": req.response_format not in (None, {"type": "text"}),
            "top_logprobs": bool(req.top_logprobs),
        },
    )
    messages = [{"role": _ROLE_MAP.get(m.role, m.role), "content": m.text()} for m in req.messages]
    window = engine.max_model_len
    hits = list(hits or [])
    if target.domain and hits and any(m["role"] == "user" for m in messages):
        # keep the best passages that leave room for the completion
        reserve = req.requested_max_tokens or min(settings.default_max_tokens, window // 4)
        while True:
            rendered = render_chat(engine.tokenizer, _with_knowledge(messages, target.domain, hits))
            if len(rendered.token_ids) + reserve <= window or len(hits) <= 1:
                break
            hits.pop()
        if len(rendered.token_ids) + reserve > window:
            hits = []
            rendered = render_chat(engine.tokenizer, messages)
    else:
        hits = []
        rendered = render_chat(engine.tokenizer, messages)
    check_prompt_fits(len(rendered.token_ids), window, "messages")
    options = sampling_options(req, req.requested_max_tokens, len(rendered.token_ids), window, settings)
    return PreparedChat(
        target.model, EngineInput(rendered.token_ids), options, sources(hits) if target.domain else None
    )


async def chat_completion(prep: PreparedChat, engine: Engine, metrics: Metrics) -> ChatCompletionResponse:
    request_id = new_id("chatcmpl")
    gen = await collect(engine, [prep.prompt], prep.options, request_id)
    metrics.tokens(prep.model, gen.prompt_tokens, gen.completion_tokens)
    return ChatCompletionResponse(
        id=request_id,
        model=prep.model,
        choices=[
            ChatChoice(index=i, message=AssistantMessage(content=c.text), finish_reason=c.finish_reason)
            for i, c in enumerate(gen.choices)
        ],
        usage=Usage.of(gen.prompt_tokens, gen.completion_tokens),
        sources=prep.sources,
    )


async def chat_stream(
    prep: PreparedChat, engine: Engine, metrics: Metrics, include_usage: bool
) -> AsyncIterator[str]:
    """Yield SSE events; the role arrives with the first content, so TTFT is honest."""
    request_id = new_id("chatcmpl")
    created = int(time.time())
    prompt_tokens = len(prep.prompt.token_ids)
    completion_tokens = 0
    started: set[int] = set()
    first = True

    def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None, sources=None) -> str:
        return event(
            ChatCompletionChunk(
                id=request_id,
                created=created,
                model=prep.model,
                choices=choices,
                usage=usage,
                sources=sources,
            )
        )

    t0 = time.perf_counter()
    async for item in stream_deltas(engine, [prep.prompt], prep.options, request_id):
        d = item.delta
        completion_tokens += d.num_tokens
        if not d.text and d.finish_reason is None and item.index in started:
            continue
        if first:
            metrics.first_token(time.perf_counter() - t0)
            first = False
        role = None if item.index in started else "assistant"
        started.add(item.index)
        yield chunk(
            [
                ChatChunkChoice(
                    index=item.index,
                    delta=ChatDelta(role=role, content=d.text),
                    finish_reason=d.finish_reason,
                )
            ]
        )
    metrics.tokens(prep.model, prompt_tokens, completion_tokens)
    if include_usage or prep.sources is not None:
        # the final event: usage when asked for, and the passages given to the model
        usage = Usage.of(prompt_tokens, completion_tokens) if include_usage else None
        yield chunk([], usage, prep.sources)
