"""OpenAI-compatible request and response models for chat, completions and models.

Limits live here so nothing unvalidated reaches the engine: bounded strings and lists, sampling
ranges as the OpenAI API documents them, plus vLLM's extensions the benchmark client uses
(``ignore_eos``, ``top_k``, ``min_tokens``, ``repetition_penalty``). Unknown fields are ignored,
as OpenAI clients send optional fields this service does not use (``user``, ``metadata``, ...);
fields the service cannot honour (images, ``logit_bias``, ``suffix``) are rejected with a clear 400.
Constrained output (``response_format``, ``tools``, vLLM's ``structured_outputs``) is modelled in
``app.protocol.structured``.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.protocol.documents import Source
from app.protocol.profiles import RetrievalOverride
from app.protocol.structured import (
    ResponseFormat,
    StructuredOutputs,
    ToolCall,
    ToolChoice,
    ToolSpec,
)

MAX_STOP = 8
MAX_STOP_LEN = 256
MAX_MESSAGES = 512
MAX_PROMPTS = 64
MAX_LOGPROBS = 20
SEED_RANGE = (-(2**63), 2**63 - 1)


# Strict types: `true` is not a temperature and `[true]` is not a token id (lax validation turned
# them into 1.0 and 1; the schema fuzz found it). JSON integers are still accepted for floats.
_STRICT = ConfigDict(extra="ignore", strict=True)


class _Request(BaseModel):
    model_config = _STRICT


class StreamOptions(BaseModel):
    model_config = _STRICT

    include_usage: bool = False


class TextPart(BaseModel):
    model_config = _STRICT

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = _STRICT

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, max_length=64)
    #: an assistant turn's calls, sent back by the client in the history
    tool_calls: list[ToolCall] | None = Field(None, max_length=64)
    #: a tool message answers this call
    tool_call_id: str | None = Field(None, max_length=128)

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


StopField = Annotated[
    str | list[Annotated[str, Field(min_length=1, max_length=MAX_STOP_LEN)]] | None,
    Field(None, description="Up to 8 stop sequences."),
]


class SamplingFields(_Request):
    """Fields shared by chat and completions requests."""

    model: str = Field(..., min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: StopField = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    # vLLM extensions
    top_k: int | None = Field(None, ge=-1, le=1_000_000)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    min_tokens: int = Field(0, ge=0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=2.0)
    ignore_eos: bool = False
    # Tailor extensions
    retrieval: RetrievalOverride | None = Field(
        None, description="Override the domain's retrieval settings for this request."
    )
    return_prompt: bool = Field(False, description="Add the exact rendered prompt as `prompt`.")
    adapter: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Name of a loaded LoRA adapter to apply (overrides the domain's adapter).",
    )
    soft_prompt: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Name of a soft prompt to apply (overrides the domain's soft prompt).",
    )
    structured_outputs: StructuredOutputs | None = Field(
        None, description="vLLM's extension: constrain the output to a JSON schema, a regex or choices."
    )
    # fields accepted by OpenAI that this service cannot honour: refused, never silently dropped
    logit_bias: dict[str, float] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_limits(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, str):
            if not v or len(v) > MAX_STOP_LEN:
                raise ValueError(f"a stop sequence must have 1 to {MAX_STOP_LEN} characters")
        elif isinstance(v, list) and len(v) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences are allowed")
        return v

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    response_format: ResponseFormat | None = None
    tools: list[ToolSpec] | None = Field(None, max_length=64)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(SamplingFields):
    prompt: (
        Annotated[str, Field(max_length=10_000_000)]
        | Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS)]
        | Annotated[list[int], Field(min_length=1)]
        | Annotated[list[list[int]], Field(min_length=1, max_length=MAX_PROMPTS)]
    )
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    response_format: ResponseFormat | None = None
    suffix: str | None = None
    best_of: int | None = None

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


# ---- responses ------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None


class CompletionLogprobs(BaseModel):
    """The legacy completions shape: parallel lists, one entry per generated token."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: ChatLogprobs | None = None


class ContextReport(BaseModel):
    """How the prompt was fitted into the window (requests to a domain)."""

    window: int
    prompt_tokens: int
    reserved_tokens: int = Field(description="Room kept for the completion.")
    passages_used: int
    passages_dropped: int = Field(description="Lowest-ranked passages left out to fit.")
    history_turns_dropped: int = Field(description="Oldest conversation messages left out to fit.")


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage
    sources: list[Source] | None = Field(None, description="Passages given to the model (domains).")
    context: ContextReport | None = None
    prompt: str | None = Field(None, description="The rendered prompt, when `return_prompt` was set.")
    gate: dict[str, Any] | None = Field(
        None,
        description='`model: "auto"` or a routing domain: the domain the gate chose (or why none), '
        "and its scores for every domain.",
    )


class FunctionCallDelta(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    finish_reason: str | None = None
    logprobs: ChatLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    sources: list[Source] | None = None
    context: ContextReport | None = None
    prompt: str | None = None
    gate: dict[str, Any] | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    sources: list[Source] | None = None
    context: ContextReport | None = None
    prompt: str | None = None
    gate: dict[str, Any] | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tailor"
    root: str
    parent: str | None = Field(
        None, description="For a domain, adapter or soft prompt: the backbone it runs on."
    )
    kind: Literal["base", "domain", "adapter", "soft_prompt", "embedding", "gate"] = Field(
        "base", description="What the name selects."
    )
    max_model_len: int = Field(description="Context window in tokens (prompt + completion).")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
