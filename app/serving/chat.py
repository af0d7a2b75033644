"""``/v1/chat/completions`` responses: a prepared request (``pipeline``) → OpenAI response or stream.

With tools, a choice's text is read as tool calls (``structured.ToolPlan.calls``). A named
function streams its arguments as they are generated; ``required`` and ``auto`` answers are read
whole and sent as one tool-call delta, since a partial list cannot be split into calls safely.
"""

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
    FunctionCallDelta,
    ToolCallDelta,
    Usage,
    new_id,
)
from app.protocol.structured import ToolCall
from app.serving.generation import ChoiceResult, collect, stream_deltas
from app.serving.logprobs import chat_logprobs
from app.serving.metrics import Metrics
from app.serving.pipeline import PreparedChat
from app.serving.sse import event
from app.serving.structured import ToolPlan, new_call


def _finish(plan: ToolPlan | None, calls: list[ToolCall], reason: str | None) -> str | None:
    """OpenAI's reasons: ``tool_calls`` when the model chose to call; a forced named call stops."""
    if calls and reason == "stop" and plan is not None and plan.mode != "named":
        return "tool_calls"
    return reason


def _choice(i: int, c: ChoiceResult, prep: PreparedChat) -> ChatChoice:
    plan = prep.tools
    calls, content = plan.calls(c.text) if plan is not None and plan.mode != "none" else ([], c.text)
    return ChatChoice(
        index=i,
        message=AssistantMessage(content=content, tool_calls=calls or None),
        finish_reason=_finish(plan, calls, c.finish_reason),
        logprobs=chat_logprobs(c.logprobs) if prep.request.options.logprobs is not None else None,
    )


async def chat_completion(prep: PreparedChat, engine: Engine, metrics: Metrics) -> ChatCompletionResponse:
    request_id = new_id("chatcmpl")
    gen = await collect(engine, [prep.request], request_id)
    metrics.tokens(prep.model, gen.prompt_tokens, gen.completion_tokens)
    return ChatCompletionResponse(
        id=request_id,
        model=prep.model,
        choices=[_choice(i, c, prep) for i, c in enumerate(gen.choices)],
        usage=Usage.of(gen.prompt_tokens, gen.completion_tokens),
        sources=prep.sources,
        context=prep.context,
        prompt=prep.prompt_text,
        gate=prep.gate,
    )


def _call_deltas(calls: list[ToolCall]) -> list[ToolCallDelta]:
    return [
        ToolCallDelta(
            index=j,
            id=c.id,
            type="function",
            function=FunctionCallDelta(name=c.function.name, arguments=c.function.arguments),
        )
        for j, c in enumerate(calls)
    ]


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
    plan = prep.tools if prep.tools is not None and prep.tools.mode != "none" else None
    named = plan is not None and plan.mode == "named"
    held: dict[int, ChoiceResult] = {}  # required / auto: answers read whole
    call_ids: dict[int, str] = {}
    wants_logprobs = prep.request.options.logprobs is not None

    def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None, final: bool = False) -> str:
        extras = (
            {"sources": prep.sources, "context": prep.context, "prompt": prep.prompt_text, "gate": prep.gate}
            if final
            else {}
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
        if first:
            metrics.first_token(time.perf_counter() - t0)
            first = False
        logprobs = chat_logprobs(d.logprobs) if wants_logprobs and d.logprobs else None
        if plan is not None and not named:
            c = held.setdefault(item.index, ChoiceResult())
            c.text += d.text
            c.logprobs += d.logprobs
            if d.finish_reason is None:
                continue
            c.finish_reason = d.finish_reason
            calls, content = plan.calls(c.text)
            yield chunk(
                [
                    ChatChunkChoice(
                        index=item.index,
                        delta=ChatDelta(
                            role="assistant", content=content, tool_calls=_call_deltas(calls) or None
                        ),
                        finish_reason=_finish(plan, calls, d.finish_reason),
                        logprobs=chat_logprobs(c.logprobs) if wants_logprobs else None,
                    )
                ]
            )
            continue
        if not d.text and d.finish_reason is None and item.index in started:
            continue
        role = None if item.index in started else "assistant"
        started.add(item.index)
        if named:
            head = role is not None
            if head:
                call_ids[item.index] = new_call(plan.name or "", "").id
            delta = ChatDelta(
                role=role,
                tool_calls=[
                    ToolCallDelta(
                        index=0,
                        id=call_ids[item.index] if head else None,
                        type="function" if head else None,
                        function=FunctionCallDelta(name=plan.name if head else None, arguments=d.text),
                    )
                ],
            )
        else:
            delta = ChatDelta(role=role, content=d.text)
        yield chunk(
            [ChatChunkChoice(index=item.index, delta=delta, finish_reason=d.finish_reason, logprobs=logprobs)]
        )
    metrics.tokens(prep.model, prompt_tokens, completion_tokens)
    if include_usage or prep.sources is not None or prep.prompt_text is not None or prep.gate is not None:
        # the final event: usage when asked for, the passages given to the model, the gate's choice
        usage = Usage.of(prompt_tokens, completion_tokens) if include_usage else None
        yield chunk([], usage, final=True)
