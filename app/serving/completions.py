"""``/v1/completions`` responses: prepared requests (``pipeline``) → OpenAI response or stream."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from app.engine import Engine
from app.protocol.openai import CompletionChoice, CompletionResponse, Usage, new_id
from app.serving.generation import collect, stream_deltas
from app.serving.logprobs import completion_logprobs
from app.serving.metrics import Metrics
from app.serving.pipeline import PreparedCompletion
from app.serving.sse import event


async def completion(prep: PreparedCompletion, engine: Engine, metrics: Metrics) -> CompletionResponse:
    request_id = new_id("cmpl")
    gen = await collect(engine, prep.requests, request_id)
    metrics.tokens(prep.model, gen.prompt_tokens, gen.completion_tokens)
    n = prep.requests[0].options.n
    wants_logprobs = prep.requests[0].options.logprobs is not None
    choices = [
        CompletionChoice(
            index=i,
            text=(prep.texts[i // n] if prep.echo else "") + c.text,
            finish_reason=c.finish_reason,
            logprobs=completion_logprobs(c.logprobs) if wants_logprobs else None,
        )
        for i, c in enumerate(gen.choices)
    ]
    return CompletionResponse(
        id=request_id,
        model=prep.model,
        choices=choices,
        usage=Usage.of(gen.prompt_tokens, gen.completion_tokens),
        sources=prep.sources,
        context=prep.context,
        prompt=prep.prompt_text,
        gate=prep.gate,
    )


async def completion_stream(
    prep: PreparedCompletion, engine: Engine, metrics: Metrics, include_usage: bool
) -> AsyncIterator[str]:
    request_id = new_id("cmpl")
    created = int(time.time())
    n = prep.requests[0].options.n
    prompt_tokens = sum(r.prompt_tokens for r in prep.requests)
    completion_tokens = 0
    echoed: set[int] = set()
    offsets: dict[int, int] = {}
    wants_logprobs = prep.requests[0].options.logprobs is not None
    first = True
    t0 = time.perf_counter()
    async for item in stream_deltas(engine, prep.requests, request_id):
        d = item.delta
        completion_tokens += d.num_tokens
        text = d.text
        if prep.echo and item.index not in echoed:
            echoed.add(item.index)
            text = prep.texts[item.index // n] + text
        if not text and d.finish_reason is None:
            continue
        if first:
            metrics.first_token(time.perf_counter() - t0)
            first = False
        logprobs = None
        if wants_logprobs:
            start = offsets.get(item.index, 0) + len(text) - len(d.text)
            logprobs = completion_logprobs(d.logprobs, start)
            offsets[item.index] = start + len(d.text)
        yield event(
            CompletionResponse(
                id=request_id,
                created=created,
                model=prep.model,
                choices=[
                    CompletionChoice(
                        index=item.index, text=text, finish_reason=d.finish_reason, logprobs=logprobs
                    )
                ],
            )
        )
    metrics.tokens(prep.model, prompt_tokens, completion_tokens)
    if include_usage or prep.sources is not None or prep.prompt_text is not None or prep.gate is not None:
        yield event(
            CompletionResponse(
                id=request_id,
                created=created,
                model=prep.model,
                choices=[],
                usage=Usage.of(prompt_tokens, completion_tokens) if include_usage else None,
                sources=prep.sources,
                context=prep.context,
                prompt=prep.prompt_text,
                gate=prep.gate,
            )
        )
