"""``/v1/completions``: raw prompts (text or token ids) → engine → OpenAI response or stream."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from app.config import Settings
from app.engine import Engine, EngineInput, SamplingOptions
from app.protocol.documents import Source
from app.protocol.errors import APIError
from app.protocol.openai import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
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
from prompts import rag


@dataclass
class PreparedCompletion:
    model: str
    prompts: list[EngineInput]
    texts: list[str]
    options: SamplingOptions
    echo: bool
    sources: list[Source] | None = None


def _tokenize_prompts(req: CompletionRequest, tokenizer) -> tuple[list[list[int]], list[str]]:
    p = req.prompt
    if isinstance(p, str):
        p = [p]
    if p and isinstance(p[0], int):
        p = [p]  # a single prompt given as token ids
    ids: list[list[int]] = []
    texts: list[str] = []
    vocab = len(tokenizer)
    for item in p:
        if isinstance(item, str):
            ids.append(tokenizer(item, add_special_tokens=True)["input_ids"])
            texts.append(item)
        else:
            bad = [t for t in item if not 0 <= t < vocab]
            if bad:
                raise APIError(
                    400,
                    f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1}).",
                    param="prompt",
                    code="invalid_value",
                )
            ids.append(list(item))
            texts.append(tokenizer.decode(item))
    return ids, texts


def domain_prompt_text(req: CompletionRequest) -> str:
    """The text to retrieve for: a domain request takes exactly one text prompt."""
    p = req.prompt
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
        p = p[0]
    if not isinstance(p, str):
        raise APIError(
            400, "A request to a domain takes one text prompt.", param="prompt", code="invalid_value"
        )
    return p


def _with_knowledge(
    tokenizer, prompt_ids: list[int], hits: list[SearchHit], room: int
) -> tuple[list[int], list[SearchHit]]:
    """Prepend the passages (as literal text) that fit in ``room`` tokens, best first."""
    hits = list(hits)
    while hits:
        context = rag.format_sources(passages(hits)) + "\n\n"
        ids = tokenizer(context, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        if len(ids) + len(prompt_ids) <= room:
            return ids + prompt_ids, hits
        hits.pop()
    return prompt_ids, []


def prepare_completion(
    req: CompletionRequest,
    target: Target,
    engine: Engine,
    settings: Settings,
    hits: list[SearchHit] | None = None,
) -> PreparedCompletion:
    reject_unsupported(req, {"suffix": bool(req.suffix), "best_of": req.best_of not in (None, 1, req.n)})
    ids, texts = _tokenize_prompts(req, engine.tokenizer)
    window = engine.max_model_len
    used: list[SearchHit] = []
    if target.domain and hits:
        reserve = req.requested_max_tokens or min(settings.default_max_tokens, window // 4)
        ids[0], used = _with_knowledge(engine.tokenizer, ids[0], hits, window - reserve)
    longest = max(len(i) for i in ids)
    for i in ids:
        check_prompt_fits(len(i), window, "prompt")
    options = sampling_options(req, req.requested_max_tokens, longest, window, settings)
    return PreparedCompletion(
        target.model,
        [EngineInput(i) for i in ids],
        texts,
        options,
        req.echo,
        sources(used) if target.domain else None,
    )


async def completion(prep: PreparedCompletion, engine: Engine, metrics: Metrics) -> CompletionResponse:
    request_id = new_id("cmpl")
    gen = await collect(engine, prep.prompts, prep.options, request_id)
    metrics.tokens(prep.model, gen.prompt_tokens, gen.completion_tokens)
    n = prep.options.n
    choices = [
        CompletionChoice(
            index=i,
            text=(prep.texts[i // n] if prep.echo else "") + c.text,
            finish_reason=c.finish_reason,
        )
        for i, c in enumerate(gen.choices)
    ]
    return CompletionResponse(
        id=request_id,
        model=prep.model,
        choices=choices,
        usage=Usage.of(gen.prompt_tokens, gen.completion_tokens),
        sources=prep.sources,
    )


async def completion_stream(
    prep: PreparedCompletion, engine: Engine, metrics: Metrics, include_usage: bool
) -> AsyncIterator[str]:
    request_id = new_id("cmpl")
    created = int(time.time())
    n = prep.options.n
    prompt_tokens = sum(len(p.token_ids) for p in prep.prompts)
    completion_tokens = 0
    echoed: set[int] = set()
    first = True
    t0 = time.perf_counter()
    async for item in stream_deltas(engine, prep.prompts, prep.options, request_id):
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
        yield event(
            CompletionResponse(
                id=request_id,
                created=created,
                model=prep.model,
                choices=[CompletionChoice(index=item.index, text=text, finish_reason=d.finish_reason)],
            )
        )
    metrics.tokens(prep.model, prompt_tokens, completion_tokens)
    if include_usage or prep.sources is not None:
        yield event(
            CompletionResponse(
                id=request_id,
                created=created,
                model=prep.model,
                choices=[],
                usage=Usage.of(prompt_tokens, completion_tokens) if include_usage else None,
                sources=prep.sources,
            )
        )
