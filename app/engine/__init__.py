"""The backbone behind a small interface, so routes never import vLLM.

``base.Engine`` is what the service needs of a backbone; ``vllm_engine.VLLMEngine`` embeds vLLM's
async engine. A remote vLLM fleet is another implementation of the same interface.
"""

from app.engine.base import (
    AdapterRef,
    Constraint,
    Engine,
    EngineError,
    EngineInput,
    EngineOverloaded,
    EngineRequest,
    EngineUnavailable,
    InvalidEngineRequest,
    OutputDelta,
    SamplingOptions,
    SoftPromptRef,
    TokenLogprob,
)
from app.engine.factory import build_engine

__all__ = [
    "AdapterRef",
    "Constraint",
    "Engine",
    "EngineError",
    "EngineInput",
    "EngineRequest",
    "EngineOverloaded",
    "EngineUnavailable",
    "InvalidEngineRequest",
    "OutputDelta",
    "SamplingOptions",
    "SoftPromptRef",
    "TokenLogprob",
    "build_engine",
]
