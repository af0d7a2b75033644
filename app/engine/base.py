"""What the service needs of a backbone, independent of how it is served.

One ``EngineRequest`` carries everything a generation needs: the prompt (token ids built by the
server from its own tokenizer and templates; server-built prompt embeddings join it with soft
prompts), the sampling options and an optional LoRA adapter. Routes build requests and never change
when the request grows. Outputs are per-choice text deltas, so streaming and non-streaming
responses are built from the same events.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from indexers.owner import OwnerThread, owner_of


class EngineError(Exception):
    """Base of errors the engine layer reports to routes."""


class InvalidEngineRequest(EngineError):
    """The engine rejected the request's parameters (maps to HTTP 400)."""


class EngineUnavailable(EngineError):
    """The engine is starting, failed or stopped (maps to HTTP 503)."""


class EngineInterrupted(EngineUnavailable):
    """Output had begun when the engine serving it failed (a replica died mid-stream).

    A stream ends with an error event; a non-streamed request is started again from the
    beginning, since nothing has reached the client yet.
    """


class EngineOverloaded(EngineError):
    """The engine's queue is full (maps to HTTP 429)."""


class EngineStartError(EngineError):
    """The engine could not start.

    ``permanent`` says retrying cannot help (bad model path, out of memory, invalid settings): the
    service then stops with this one-line reason instead of serving 503s forever. Anything else
    (a crashed core, a failed import) is retried with backoff.
    """

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True, eq=False)
class Constraint:
    """What the output must match, enforced while decoding (vLLM's structured outputs).

    ``kind``: ``json`` (``value`` is a JSON schema), ``json_object`` (any JSON object), ``regex``
    (``value`` is the pattern) or ``choice`` (``value`` is a tuple of allowed strings).
    """

    kind: Literal["json", "json_object", "regex", "choice"]
    value: Any = None

    def fields(self) -> dict[str, Any]:
        """As vLLM's ``StructuredOutputsParams`` fields (embedded) or ``structured_outputs`` (HTTP)."""
        if self.kind == "json":
            return {"json": self.value}
        if self.kind == "json_object":
            return {"json_object": True}
        if self.kind == "regex":
            return {"regex": self.value}
        return {"choice": list(self.value)}


@dataclass(frozen=True)
class SamplingOptions:
    """Per-request sampling, already validated by the protocol layer."""

    max_tokens: int
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    min_tokens: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False
    #: None: no log-probabilities; k >= 0: the sampled token's plus the k most likely.
    logprobs: int | None = None
    constraint: Constraint | None = None

    def fields(self) -> dict[str, Any]:
        """Everything but the constraint, under vLLM's ``SamplingParams`` names (the same names its
        completion route takes)."""
        return {
            "n": self.n,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "min_tokens": self.min_tokens,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "repetition_penalty": self.repetition_penalty,
            "stop": list(self.stop),
            "stop_token_ids": list(self.stop_token_ids),
            "seed": self.seed,
            "ignore_eos": self.ignore_eos,
            "logprobs": self.logprobs,
        }


@dataclass(frozen=True, eq=False)
class SoftPromptRef:
    """A trained soft prompt as the engine applies it: a tensor the server loaded, never a client's.

    ``embeddings``: (virtual tokens, hidden) vectors placed before the prompt's token embeddings.
    ``prefix``: (virtual tokens, layers × 2 × kv dim) key/value prefixes for every layer. ``id``
    changes when the weights do, so nothing cached for an old tensor is reused.
    """

    name: str
    id: int
    kind: Literal["embeddings", "prefix"]
    tensor: Any

    @property
    def num_virtual_tokens(self) -> int:
        return int(self.tensor.shape[0])


@dataclass(frozen=True)
class EngineInput:
    """A fully assembled prompt: the engine never sees client text it must parse.

    With a soft prompt, its virtual tokens come first and take window positions too.
    """

    token_ids: list[int]
    soft_prompt: SoftPromptRef | None = None

    @property
    def length(self) -> int:
        """Positions the prompt takes in the context window."""
        virtual = self.soft_prompt.num_virtual_tokens if self.soft_prompt is not None else 0
        return len(self.token_ids) + virtual


@dataclass(frozen=True)
class AdapterRef:
    """A LoRA adapter as the engine loads it: a unique id per (name, weights) and a local folder.

    A replaced adapter gets a new id, so an engine never serves cached weights of the old one.
    """

    name: str
    id: int
    path: str
    #: Set for an adapter vLLM cannot serve faithfully (a conversion below the agreement bar): the
    #: PEFT folder the transformers path loads instead (``app.engine.prefix_path``).
    peft_path: str | None = None


def on_transformers(request: EngineRequest) -> bool:
    """Whether a request runs on the transformers path beside vLLM: a prefix-tuning soft prompt, or
    an adapter vLLM does not serve faithfully (PEFT serves it)."""
    soft, adapter = request.prompt.soft_prompt, request.adapter
    return (soft is not None and soft.kind == "prefix") or (
        adapter is not None and adapter.peft_path is not None
    )


@dataclass(frozen=True)
class EngineRequest:
    """One generation: prompt, sampling and the adapter (None: the bare backbone).

    ``affinity`` groups requests that share a prompt prefix (the domain): an engine made of
    several servers sends them to the same few, where the prefix is already cached.
    """

    prompt: EngineInput
    options: SamplingOptions
    adapter: AdapterRef | None = None
    affinity: str | None = None

    @property
    def prompt_tokens(self) -> int:
        return self.prompt.length


#: The log-probability reported for a token a constraint ruled out (JSON has no -inf; vLLM's value).
LOGPROB_FLOOR = -9999.0


def check_continuation(prompt: EngineInput, continuation: list[int], window: int) -> None:
    """What every engine refuses to score (``continuation_logprob``)."""
    if not continuation:
        raise InvalidEngineRequest("the continuation is empty")
    if len(prompt.token_ids) + len(continuation) >= window:
        raise InvalidEngineRequest("the prompt and continuation do not fit the window")
    if prompt.soft_prompt is not None and prompt.soft_prompt.kind == "prefix":
        raise InvalidEngineRequest("scoring with a prefix-tuning soft prompt is not supported")


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token with its log-probability and the most likely alternatives."""

    token_id: int
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class OutputDelta:
    """New output of one choice since the previous event."""

    index: int
    text: str
    num_tokens: int
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    #: One entry per new token when log-probabilities were asked for.
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass
class EngineStats:
    running_requests: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Engine(abc.ABC):
    """A text-generation backbone with a tokenizer and a fixed context window."""

    #: Path or id of the loaded model.
    model: str
    #: Context window in tokens (prompt + completion), as the engine enforces it.
    max_model_len: int

    @abc.abstractmethod
    async def start(self) -> None:
        """Load the model; raise on failure. Called once, off the request path."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Release the model and any worker processes."""

    @property
    @abc.abstractmethod
    def ready(self) -> bool: ...

    @property
    @abc.abstractmethod
    def tokenizer(self) -> Any:
        """The backbone's ``prompts.tokenizer.PromptTokenizer`` (chat template included).

        Use it only on ``tokens``, its owner thread: prompt rendering, assembly and training-data
        tokenization all run there, never on the event loop or a second thread.
        """

    @property
    def tokens(self) -> OwnerThread:
        """The one thread that uses ``tokenizer`` (created on first use)."""
        return owner_of(self, "tailor-tokenizer", strict=True)

    #: Whether the engine recovers from not being ready by itself (a fleet probes its replicas):
    #: the supervisor then waits instead of restarting it.
    self_healing: bool = False

    def not_ready_reason(self) -> str:
        return "the engine stopped responding"

    #: Largest LoRA rank the engine accepts; 0 when LoRA is off.
    max_lora_rank: int = 0
    #: Why LoRA is off although it was configured (its guard could not be installed), else None.
    lora_off_reason: str | None = None

    async def guard_status(self) -> dict[str, Any]:
        """Whether the LoRA guard (``app.engine.lora_guard``) is active where the kernels run."""
        return {"active": False, "lora": bool(self.max_lora_rank), "reason": "not a vLLM engine"}

    def describe_window(self) -> dict[str, Any]:
        """The window, its RoPE scaling and KV-cache needs, for /health."""
        return {"max_model_len": self.max_model_len}

    def describe(self) -> dict[str, Any] | None:
        """What serves the backbone beyond the window (a fleet: its replicas), for /health."""
        return None

    def metrics_text(self) -> bytes:
        """Prometheus lines of the engine's own (per-replica counters of a fleet)."""
        return b""

    def transformers_overrides(self) -> dict[str, Any]:
        """Config fields that give a transformers copy of the backbone the served positions.

        The prefix-tuning path and the trainers load the backbone with transformers; with these
        they use the engine's RoPE scaling and window.
        """
        return {}

    @abc.abstractmethod
    def generate(self, request: EngineRequest, request_id: str) -> AsyncIterator[list[OutputDelta]]:
        """Stream output deltas; closing the iterator aborts the request in the engine."""

    @abc.abstractmethod
    async def continuation_logprob(
        self, prompt: EngineInput, continuation: list[int], request_id: str, adapter: AdapterRef | None = None
    ) -> float:
        """Sum of log-probabilities the model gives ``continuation`` right after ``prompt``."""

    async def add_adapter(self, adapter: AdapterRef) -> None:
        """Load an adapter's weights now (so a bad one fails here, not at its first request)."""
        raise InvalidEngineRequest("this engine serves no LoRA adapters")

    async def remove_adapter(self, adapter: AdapterRef) -> None:  # noqa: B027 - optional
        """Drop an adapter's weights from the engine's caches (no-op if not loaded)."""

    @abc.abstractmethod
    def stats(self) -> EngineStats: ...
