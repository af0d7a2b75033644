"""``/v1/chat/completions``: messages → chat template → engine → OpenAI response or stream."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from app.config import Settings
from app.domains.profile import DomainProfile
from app.engine import Engine, EngineInput, SamplingOptions
from app.protocol.documents import Source
from app.protocol.errors import APIError
from app.protocol.openai import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ContextReport,
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
from prompts import render_chat
from prompts.assemble import Assembled, ContextOverflow, PromptParts, assemble_chat

_ROLE_MAP = {"developer": "system"}


@dataclass
class PreparedChat:
    model: str
    prompt: EngineInput
    options: SamplingOptions
    sources: list[Source] | None = None
    context: ContextReport | None = None
    prompt_text: str | None = None


def last_user_text(req: ChatCompletionRequest) -> str:
    return next((m.text() for m in reversed(req.messages) if m.role == "user"), "")


def _domain_parts(
    messages: list[dict[str, str]], profile: DomainProfile, hits: list[SearchHit]
) -> PromptParts:
    """Split the conversation: client system text, history, and the final question."""
    if messages[-1]["role"] != "user":
        raise APIError(
            400, "A request to a domain must end with a user message.", param="messages", code="invalid_value"
        )
    client_system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    turns = [m for m in messages[:-1] if m["role"] != "system"]
    return PromptParts(
        template=profile.prompt_template,
        question=messages[-1]["content"],
        system="\n\n".join(x for x in (profile.system_prompt, client_system) if x),
        domain=profile.name,
        passages=passages(hits),
        examples=[(e.input, e.output) for e in profile.examples],
        history=turns,
    )


def reserve_for(requested: int | None, profile: DomainProfile | None, window: int, settings: Settings) -> int:
    """Tokens kept free for the completion while fitting the prompt."""
    if requested is not None:
        return requested
    if profile is not None and profile.generation.max_tokens is not None:
        return min(profile.generation.max_tokens, window // 2)
    return min(settings.default_max_tokens, window // 4)


def budget_error(exc: ContextOverflow, param: str) -> APIError:
    return APIError(
        400,
        f"This model's maximum context length is {exc.window} tokens: {exc}.",
        param=param,
        code="context_length_exceeded",
    )


def context_report(assembled: Assembled, window: int, reserve: int) -> ContextReport:
    return ContextReport(
        window=window,
        prompt_tokens=len(assembled.prompt.token_ids),
        reserved_tokens=reserve,
        passages_used=assembled.passages_used,
        passages_dropped=assembled.passages_dropped,
        history_turns_dropped=assembled.turns_dropped,
    )


def prepare_chat(
    req: ChatCompletionRequest,
    target: Target,
    engine: Engine,
    settings: Settings,
    profile: DomainProfile | None = None,
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
    used: list[SearchHit] = []
    report = None
    if profile is not None:
        reserve = reserve_for(req.requested_max_tokens, profile, window, settings)
        hits = list(hits or [])
        try:
            assembled = assemble_chat(
                engine.tokenizer, _domain_parts(messages, profile, hits), window, reserve
            )
        except ContextOverflow as exc:
            raise budget_error(exc, "messages") from exc
        rendered = assembled.prompt
        used = hits[: assembled.passages_used]
        report = context_report(assembled, window, reserve)
    else:
        rendered = render_chat(engine.tokenizer, messages)
    check_prompt_fits(len(rendered.token_ids), window, "messages")
    options = sampling_options(
        req,
        req.requested_max_tokens,
        len(rendered.token_ids),
        window,
        settings,
        profile.generation if profile else None,
    )
    return PreparedChat(
        target.model,
        EngineInput(rendered.token_ids),
        options,
        sources(used) if profile is not None else None,
        report,
        rendered.text if req.return_prompt else None,
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
        context=prep.context,
        prompt=prep.prompt_text,
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
    if include_usage or prep.sources is not None or prep.prompt_text is not None:
        # the final event: usage when asked for, and the passages given to the model
        usage = Usage.of(prompt_tokens, completion_tokens) if include_usage else None
        yield chunk([], usage, final=True)
