"""The backbone behind a small interface, so routes never import vLLM.

``base.Engine`` is what the service needs of a backbone; ``vllm_engine.VLLMEngine`` embeds vLLM's
async engine. A remote vLLM fleet is another implementation of the same interface.
"""

from app.engine.base import (
    Engine,
    EngineError,
    EngineInput,
    EngineOverloaded,
    EngineUnavailable,
    InvalidEngineRequest,
    OutputDelta,
    SamplingOptions,
)
from app.engine.factory import build_engine

__all__ = [
    "Engine",
    "EngineError",
    "EngineInput",
    "EngineOverloaded",
    "EngineUnavailable",
    "InvalidEngineRequest",
    "OutputDelta",
    "SamplingOptions",
    "build_engine",
]
