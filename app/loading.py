"""One lock for loading model libraries and weights, so two loads never interleave.

transformers is a lazily-initialized package: its attributes (``AutoTokenizer``, model classes)
are imported on first access, and that machinery is not safe when two threads reach it at once.
The engine (vLLM reads configs and tokenizers through transformers) and the embedder
(sentence-transformers) both load at start-up; run concurrently they failed by timing with
``ImportError: cannot import name 'AutoTokenizer'``, most often on a busy machine. Every load
of a model library or model therefore happens under ``LOAD_LOCK``, and the heavy imports are
done once, first, by :func:`import_model_libraries`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Held while a model library is imported or a model (backbone, tokenizer, embedder) is loaded.
LOAD_LOCK = threading.RLock()
_imported = False


def import_model_libraries() -> None:
    """Import torch, transformers' auto classes and sentence-transformers once (idempotent)."""
    global _imported
    with LOAD_LOCK:
        if _imported:
            return
        t0 = time.monotonic()
        import torch  # noqa: F401
        import transformers

        # resolve the lazy attributes every loader reaches for, while nothing else runs
        for name in ("AutoConfig", "AutoTokenizer", "AutoModel", "PreTrainedTokenizerFast"):
            getattr(transformers, name)
        import sentence_transformers  # noqa: F401

        _imported = True
        log.info("model libraries imported in %.1f s", time.monotonic() - t0)


def loading(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run a blocking load under the lock, after the shared imports (call it from a worker thread)."""
    import_model_libraries()
    with LOAD_LOCK:
        return fn(*args, **kwargs)
