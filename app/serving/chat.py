"""``/v1/chat/completions`` responses: a prepared request (``pipeline``) → OpenAI response or stream."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from app.engine import Engine
from app.protocol.openai import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatDelta,
    Usage,
    new_id,
)
from app.serving.generation import collect, stream_deltas
from app.serving.metrics import Metrics
from app.serving.pipeline import PreparedChat
from app.serving.sse import event


async def chat_completion(prep: PreparedChat, engine: Engine, metrics: Metrics) -> ChatCompletionResponse:
    request_id = new_id("chatcmpl")
    gen = await collect(engine, [prep.request], request_id)
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
        context=prep.context,
        prompt=prep.prompt_text,
    )


async def chat_stream(
    prep: PreparedChat, engine: Engine, metrics: Metrics, include_usage: bool
) -> AsyncIterator[str]:
    """Yield SSE events; the role arrives with the first content, so TTFT is honest."""
    request_id = new_id("chatcmpl")
    created = int(time.time())
    prompt_tokens = prep.request.prompt_tokens
    completion_tokens = 0
    started: set[int] = set()
    first = True

    def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None, final: bool = False) -> str:
        extras = (
            {"sources": prep.sources, "context": prep.context, "prompt": prep.prompt_text} if final else {}
        )
        return event(
            ChatCompletionChunk(
                id=request_id, created=created, model=prep.model, choices=choices, usage=usage, **extras
            )
        )

    t0 = time.perf_counter()
    async for item in stream_deltas(engine, [prep.request], request_id):
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
    if include_usage or prep.sources is not None or prep.prompt_text is not None:
        # the final event: usage when asked for, and the passages given to the model
        usage = Usage.of(prompt_tokens, completion_tokens) if include_usage else None
        yield chunk([], usage, final=True)
