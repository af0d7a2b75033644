"""Shared generation path for chat and completions: limits, sampling, running, accounting.

Every check against the context window happens here, in tokens of the backbone's tokenizer, so a
request that cannot fit never reaches the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from app.config import Settings
from app.engine import Engine, EngineRequest, OutputDelta, SamplingOptions, TokenLogprob
from app.engine.base import EngineInterrupted, EngineOverloaded, EngineUnavailable, InvalidEngineRequest
from app.protocol.errors import APIError
from app.protocol.openai import SamplingFields
from app.protocol.profiles import GenerationDefaults


def reject_unsupported(req: SamplingFields, extra: dict[str, object] | None = None) -> None:
    """Refuse OpenAI features this service does not implement instead of ignoring them."""
    unsupported: dict[str, object] = {
        "logit_bias": bool(req.logit_bias),
        **(extra or {}),
    }
    for name, present in unsupported.items():
        if present:
            raise APIError(
                400, f"'{name}' is not supported by this server.", param=name, code="unsupported_parameter"
            )


def check_prompt_fits(prompt_tokens: int, window: int, param: str) -> None:
    if prompt_tokens == 0:
        raise APIError(400, "The prompt is empty.", param=param, code="empty_prompt")
    if prompt_tokens >= window:
        raise APIError(
            400,
            f"This model's maximum context length is {window} tokens. However, your prompt "
            f"resulted in {prompt_tokens} tokens, leaving no room for a completion.",
            param=param,
            code="context_length_exceeded",
        )


def sampling_options(
    req: SamplingFields,
    requested_max: int | None,
    prompt_tokens: int,
    window: int,
    settings: Settings,
    defaults: GenerationDefaults | None = None,
) -> SamplingOptions:
    """Map request fields onto engine sampling, enforcing the window and the service's limits."""
    room = window - prompt_tokens
    if requested_max is not None and requested_max > room:
        raise APIError(
            400,
            f"This model's maximum context length is {window} tokens. However, you requested "
            f"{prompt_tokens + requested_max} tokens ({prompt_tokens} in the prompt, "
            f"{requested_max} for the completion). Please reduce the prompt or max_tokens.",
            param="max_tokens",
            code="context_length_exceeded",
        )
    if req.n > settings.max_n:
        raise APIError(400, f"n must be at most {settings.max_n}.", param="n", code="invalid_value")
    defaults = defaults or GenerationDefaults()
    if requested_max is None and defaults.max_tokens is not None:
        max_tokens = min(defaults.max_tokens, room)
    elif requested_max is None:
        max_tokens = min(settings.default_max_tokens, room)
    else:
        max_tokens = requested_max
    if req.min_tokens > max_tokens:
        raise APIError(
            400, "min_tokens must not exceed max_tokens.", param="min_tokens", code="invalid_value"
        )
    fallback = settings.default_temperature if req.n == 1 else max(settings.default_temperature, 1.0)
    temperature = _first(req.temperature, defaults.temperature, fallback)
    if req.n > 1 and temperature == 0:
        raise APIError(
            400,
            "n > 1 needs temperature > 0 (greedy choices would be identical).",
            param="n",
            code="invalid_value",
        )
    return SamplingOptions(
        max_tokens=max_tokens,
        n=req.n,
        temperature=temperature,
        top_p=_first(req.top_p, defaults.top_p, settings.default_top_p),
        top_k=0 if req.top_k in (None, -1) else req.top_k,
        min_p=req.min_p,
        min_tokens=req.min_tokens,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        repetition_penalty=req.repetition_penalty,
        stop=req.stop_list() if req.stop is not None else tuple(defaults.stop or ()),
        seed=req.seed,
        ignore_eos=req.ignore_eos,
    )


def _first(*values):
    """The first value that is not None (request, then profile, then service default)."""
    return next(v for v in values if v is not None)


@dataclass
class ChoiceResult:
    text: str = ""
    num_tokens: int = 0
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class Generation:
    """Results of one or more prompts, choices numbered ``prompt_index * n + choice``."""

    prompt_tokens: int
    choices: list[ChoiceResult] = field(default_factory=list)

    @property
    def completion_tokens(self) -> int:
        return sum(c.num_tokens for c in self.choices)


@dataclass(frozen=True)
class IndexedDelta:
    index: int
    delta: OutputDelta


def _engine_error(exc: Exception) -> APIError:
    if isinstance(exc, InvalidEngineRequest):
        return APIError(400, str(exc), code="invalid_request")
    if isinstance(exc, EngineOverloaded):
        return APIError(429, str(exc) or "The engine queue is full; retry later.", code="overloaded")
    if isinstance(exc, EngineUnavailable):
        return APIError(503, str(exc), code="engine_unavailable")
    return APIError(500, "The engine failed while generating.", code="engine_error")


async def stream_deltas(
    engine: Engine, requests: Sequence[EngineRequest], request_id: str
) -> AsyncIterator[IndexedDelta]:
    """Run all requests concurrently and yield their deltas as they arrive, re-indexed.

    Errors surface as ``APIError``; leaving the iterator early cancels every engine request.
    """
    if len(requests) == 1:
        try:
            async for deltas in engine.generate(requests[0], request_id):
                for d in deltas:
                    yield IndexedDelta(d.index, d)
        except APIError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to an OpenAI error
            raise _engine_error(exc) from exc
        return

    queue: asyncio.Queue[IndexedDelta | BaseException | None] = asyncio.Queue()

    async def pump(i: int, request: EngineRequest) -> None:
        try:
            async for deltas in engine.generate(request, f"{request_id}-{i}"):
                for d in deltas:
                    queue.put_nowait(IndexedDelta(i * request.options.n + d.index, d))
        except Exception as exc:  # noqa: BLE001 - forwarded to the consumer
            queue.put_nowait(exc)
        finally:
            queue.put_nowait(None)

    tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(requests)]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise _engine_error(item) from item
            else:
                yield item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def collect(engine: Engine, requests: Sequence[EngineRequest], request_id: str) -> Generation:
    """The whole output of every request.

    Nothing has reached the client yet, so output lost to an engine that failed mid-generation (a
    fleet replica that died: ``EngineInterrupted``) is thrown away and the generation runs again
    once, on whatever serves now.
    """
    for attempt in (1, 2):
        gen = Generation(prompt_tokens=sum(r.prompt_tokens for r in requests))
        gen.choices = [ChoiceResult() for r in requests for _ in range(r.options.n)]
        try:
            async for item in stream_deltas(
                engine, requests, f"{request_id}-{attempt}" if attempt > 1 else request_id
            ):
                choice = gen.choices[item.index]
                choice.text += item.delta.text
                choice.num_tokens += item.delta.num_tokens
                choice.logprobs += item.delta.logprobs
                if item.delta.finish_reason is not None:
                    choice.finish_reason = item.delta.finish_reason
        except APIError as exc:
            if attempt == 1 and isinstance(exc.__cause__, EngineInterrupted):
                continue
            raise
        return gen
    raise AssertionError("unreachable")
