"""Sorting start-up failures into permanent and transient ones.

A permanent failure cannot be cured by trying again: the model path is wrong, the machine has
too little memory for the model and its cache, or a setting is invalid. The service then exits
with the reason (so ``make run``, Docker, systemd and Kubernetes see it). Everything else — an
engine core that died while starting, an import that failed — is retried with backoff.
"""

from __future__ import annotations

from app.checkpoints.prepare import ModelPrepareError
from app.engine.base import EngineStartError

_MEMORY_WORDS = (
    "out of memory",
    "insufficient memory",
    "not enough memory",
    "cannot allocate memory",
    "no available memory for the cache blocks",
    "larger than the available kv cache",
)
_MODEL_WORDS = (
    "is not a local folder and is not a valid model identifier",
    "does not appear to have a file named",
    "can't load",
    "unrecognized model",
    "no such file or directory",
)


def one_line(exc: BaseException, limit: int = 400) -> str:
    """``Type: message`` on one line, short enough for a log line and /health."""
    text = " ".join(str(exc).split())
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__  # explicit causes only: an implicit context can be noise
    return seen


def is_permanent(exc: BaseException) -> bool:
    for e in _chain(exc):
        if isinstance(e, EngineStartError):
            return e.permanent
        if isinstance(e, ModelPrepareError):
            return True
        if isinstance(e, ImportError):
            return False  # a half-imported library: another try in a clean state can succeed
        if isinstance(e, (MemoryError, FileNotFoundError, NotADirectoryError, PermissionError)):
            return True
        if "OutOfMemory" in type(e).__name__:
            return True
        message = str(e).lower()
        if any(w in message for w in _MEMORY_WORDS) or any(w in message for w in _MODEL_WORDS):
            return True
        if isinstance(e, (ValueError, TypeError)):  # vLLM and pydantic validation of the settings
            return True
    return False


def start_failure(exc: BaseException) -> EngineStartError:
    if isinstance(exc, EngineStartError):
        return exc
    return EngineStartError(one_line(exc), permanent=is_permanent(exc))
