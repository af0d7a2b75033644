"""``/v1/completions``: raw prompts (text or token ids) → engine → OpenAI response or stream."""

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
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    ContextReport,
    Usage,
    new_id,
)
from app.serving.chat import budget_error, context_report, reserve_for
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
from prompts.assemble import ContextOverflow, PromptParts, assemble_text


@dataclass
class PreparedCompletion:
    model: str
    prompts: list[EngineInput]
    texts: list[str]
    options: SamplingOptions
    echo: bool
    sources: list[Source] | None = None
    context: ContextReport | None = None
    prompt_text: str | None = None


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


def prepare_completion(
    req: CompletionRequest,
    target: Target,
    engine: Engine,
    settings: Settings,
    profile: DomainProfile | None = None,
    hits: list[SearchHit] | None = None,
) -> PreparedCompletion:
    reject_unsupported(req, {"suffix": bool(req.suffix), "best_of": req.best_of not in (None, 1, req.n)})
    window = engine.max_model_len
    used: list[SearchHit] = []
    report = None
    if profile is not None:
        # the domain's template around the prompt, passages as literal text, fitted to the window
        question = domain_prompt_text(req)
        reserve = reserve_for(req.requested_max_tokens, profile, window, settings)
        hits = list(hits or [])
        parts = PromptParts(
            template=profile.prompt_template,
            question=question,
            domain=profile.name,
            passages=passages(hits),
            examples=[(e.input, e.output) for e in profile.examples],
        )
        try:
            assembled = assemble_text(engine.tokenizer, parts, window, reserve)
        except ContextOverflow as exc:
            raise budget_error(exc, "prompt") from exc
        ids, texts = [assembled.prompt.token_ids], [question]
        rendered_texts = [assembled.prompt.text]
        used = hits[: assembled.passages_used]
        report = context_report(assembled, window, reserve)
    else:
        ids, texts = _tokenize_prompts(req, engine.tokenizer)
        rendered_texts = texts
    longest = max(len(i) for i in ids)
    for i in ids:
        check_prompt_fits(len(i), window, "prompt")
    options = sampling_options(
        req, req.requested_max_tokens, longest, window, settings, profile.generation if profile else None
    )
    return PreparedCompletion(
        target.model,
        [EngineInput(i) for i in ids],
        texts,
        options,
        req.echo,
        sources(used) if profile is not None else None,
        report,
        "\n\n".join(rendered_texts) if req.return_prompt else None,
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
        context=prep.context,
        prompt=prep.prompt_text,
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
    if include_usage or prep.sources is not None or prep.prompt_text is not None:
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
            )
        )
