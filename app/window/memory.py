"""KV-cache space for the window: computed from the backbone's shape before the engine starts.

Each token of each running sequence keeps a key and a value per layer and KV head. A long window
is only usable if the cache holds it: vLLM refuses a window larger than its cache at start with
a message in blocks and bytes; this check speaks in the service's settings and is extended to
``full_window_requests`` sequences at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = 1024**3


@dataclass(frozen=True)
class KVBudget:
    """Bytes per token, and what the window needs against the space configured (CPU) or found (GPU)."""

    bytes_per_token: int
    window: int
    requests: int
    #: Cache space in bytes: configured on CPU, vLLM's after start on GPU; None before that.
    space_bytes: int | None

    @property
    def window_bytes(self) -> int:
        return self.bytes_per_token * self.window

    @property
    def needed_bytes(self) -> int:
        return self.window_bytes * self.requests

    @property
    def full_windows(self) -> int | None:
        return None if self.space_bytes is None else self.space_bytes // self.window_bytes

    @property
    def capacity_tokens(self) -> int | None:
        return None if self.space_bytes is None else self.space_bytes // self.bytes_per_token

    def problem(self, on_gpu: bool = False) -> str | None:
        """Why the window does not fit, with the setting that would make it fit; None when it does."""
        if self.space_bytes is None or self.space_bytes >= self.needed_bytes:
            return None
        need_gib = self.needed_bytes / GIB
        where = "vLLM found free on the GPU" if on_gpu else "is configured"
        remedy = (
            "raise TAILOR_ENGINE__GPU_MEMORY_UTILIZATION"
            if on_gpu
            else f"set TAILOR_ENGINE__KV_CACHE_SPACE_GIB={math.ceil(need_gib * 1.02 * 10) / 10:g} or more"
        )
        return (
            f"the KV cache cannot hold {self.requests} request(s) of the {self.window}-token window: "
            f"{self.window_bytes / GIB:.2f} GiB each ({self.bytes_per_token} bytes per token), "
            f"{need_gib:.2f} GiB in all, but {self.space_bytes / GIB:.2f} GiB {where}; {remedy}, a "
            "smaller window, fewer TAILOR_ENGINE__FULL_WINDOW_REQUESTS, or a 16-bit dtype"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "bytes_per_token": self.bytes_per_token,
            "window_gib": round(self.window_bytes / GIB, 4),
            "full_window_requests": self.requests,
            "space_gib": None if self.space_bytes is None else round(self.space_bytes / GIB, 4),
            "capacity_tokens": self.capacity_tokens,
            "full_windows_at_once": self.full_windows,
        }


def kv_bytes_per_token(config: dict[str, Any], dtype: str) -> int:
    """2 (key and value) x layers x KV heads x head size x bytes of the cache dtype."""
    config = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return 2 * config["num_hidden_layers"] * kv_heads * head_dim * _DTYPE_BYTES[dtype]


def kv_budget(
    config: dict[str, Any], dtype: str, window: int, requests: int, space_bytes: int | None
) -> KVBudget:
    return KVBudget(kv_bytes_per_token(config, dtype), window, requests, space_bytes)
