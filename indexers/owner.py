"""One thread that owns an object no two threads may use at once (a tokenizer, a writer).

Hugging Face fast tokenizers are Rust objects behind a borrow check: a call that changes their
state (special-token splitting, truncation, padding) while another thread encodes can raise
"Already borrowed" or tokenize with the other call's settings. vLLM gives its tokenizer a
single-thread executor (``_tokenizer_executor``) for the same reason; this is ours. Work is
submitted from the event loop with ``run`` (the loop never tokenizes) or from any other thread
with ``call``; a call made on the owner thread itself runs inline, so owned code can nest.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class OwnerThread:
    def __init__(self, name: str, strict: bool = False) -> None:
        """``strict``: ``call`` from a thread running an event loop is an error (the service's
        owners: its loop must never wait on a tokenizer); a library owner lets a notebook's loop
        thread wait."""
        self.name = name
        self.strict = strict
        self._ident: int | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name, initializer=self._mark)

    def _mark(self) -> None:
        self._ident = threading.get_ident()

    def owns_this_thread(self) -> bool:
        return threading.get_ident() == self._ident

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the owner thread from the event loop."""
        if self.owns_this_thread():
            return fn(*args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the owner thread and wait (from a worker thread, never the loop)."""
        if self.owns_this_thread():
            return fn(*args, **kwargs)
        if self.strict and _loop_running():
            raise RuntimeError(f"{self.name}: call() would block the event loop; await run() instead")
        return self._pool.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def owner_of(obj: Any, name: str, strict: bool = False) -> OwnerThread:
    """``obj``'s owner thread, created on first use and kept on it (tokenizer holders: the engine,
    the embedder)."""
    owner = obj.__dict__.get("_owner_thread")
    if owner is None:
        owner = obj.__dict__.setdefault("_owner_thread", OwnerThread(name, strict))
    return owner
