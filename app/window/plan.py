"""From settings and the backbone's config to the served window and its RoPE scaling.

Three ways to a window: the backbone's own (``max_model_len`` at most its trained positions);
``context_length`` (the window a user wants: beyond the native one, YaRN with the factor it
needs: it leaves the fast rotations that order nearby tokens alone, and on the default backbone
it found passkeys up to 30k tokens with the lowest perplexity; dynamic NTK found them at 12-16k
at a higher perplexity, linear never); or an explicit ``rope_scaling``.

vLLM and transformers read scaling from different fields, and vLLM's "dynamic" is static, so
the plan spells out each side:

- linear: positions divided by ``factor``; vLLM sizes its table from the original positions.
- dynamic: NTK-aware base scaling. vLLM computes the base once for the whole window (what
  transformers' dynamic scaling reaches at that length) and uses it for every length; the
  transformers side gets the same base as plain RoPE, so training and the prefix path see the
  positions vLLM serves (transformers' own dynamic scaling would leave short inputs unscaled).
- yarn: identical fields on both sides.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config import EngineSettings, RopeScaling


class WindowError(ValueError):
    """The settings ask for a window this backbone cannot be given; the message says what can."""


@dataclass(frozen=True)
class WindowPlan:
    """The served window and the RoPE scaling that gives it (``rope`` None: unscaled)."""

    native: int
    window: int
    rope: dict[str, Any] | None = None
    #: Serving past the native window without scaling (vLLM's VLLM_ALLOW_LONG_MAX_MODEL_LEN):
    #: plain RoPE extrapolated to unseen positions, for measurements only.
    extrapolated: bool = False
    rope_theta: float = 10_000.0
    rotary_dim: int = 64
    #: False when the config gives no trained positions: the engine decides the window.
    known: bool = True

    @property
    def factor(self) -> float:
        return float(self.rope["factor"]) if self.rope else 1.0

    def engine_overrides(self) -> dict[str, Any]:
        """``hf_overrides`` for vLLM: the scaling and a positions count its tables cover."""
        if self.rope is None:
            return {"max_position_embeddings": self.window} if self.extrapolated else {}
        rope_type = self.rope["rope_type"]
        original = int(self.rope.get("original_max_position_embeddings", self.native))
        params = {**self.rope, "rope_theta": self.rope_theta}
        if rope_type == "linear":
            # vLLM builds original x factor positions and multiplies the window by the factor.
            params.pop("original_max_position_embeddings", None)
            return {"rope_parameters": params, "max_position_embeddings": original}
        if rope_type == "dynamic":
            # vLLM's table has max_position_embeddings rows; its base is computed for that length
            # (never shorter than the original positions, where dynamic scaling starts).
            params.pop("original_max_position_embeddings", None)
            params["max_trained_positions"] = original
            return {"rope_parameters": params, "max_position_embeddings": max(self.window, original)}
        return {"rope_parameters": params, "max_position_embeddings": self.window}

    def transformers_overrides(self) -> dict[str, Any]:
        """Config fields for ``from_pretrained`` so transformers computes vLLM's positions."""
        if self.rope is None:
            return {"max_position_embeddings": self.window} if self.window > self.native else {}
        rope_type = self.rope["rope_type"]
        if rope_type == "dynamic":
            params: dict[str, Any] = {"rope_type": "default", "rope_theta": self.dynamic_base()}
        else:
            params = {**self.rope, "rope_theta": self.rope_theta}
        return {"rope_parameters": params, "max_position_embeddings": max(self.window, self.native)}

    def dynamic_base(self) -> float:
        """The NTK-aware base for the whole window, as vLLM and transformers' dynamic scaling compute it."""
        assert self.rope is not None
        factor = float(self.rope["factor"])
        original = int(self.rope.get("original_max_position_embeddings", self.native))
        ratio = factor * max(self.window, original) / original - (factor - 1)
        return self.rope_theta * ratio ** (self.rotary_dim / (self.rotary_dim - 2))

    def describe(self) -> dict[str, Any]:
        """What /health and the logs show."""
        return {
            "max_model_len": self.window,
            "native_max_model_len": self.native if self.known else None,
            "rope_scaling": dict(self.rope) if self.rope else None,
            "extrapolated": self.extrapolated,
        }


def model_config(model: str) -> dict[str, Any]:
    """The backbone's ``config.json``: a local folder, or a hub id in the local cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        file = path / "config.json"
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
        if not isinstance(cached, str):
            raise WindowError(f"model {model!r} has no config.json in the local cache")
        file = Path(cached)
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise WindowError(f"cannot read {file}: {exc}") from exc


#: Where configs keep their trained positions, in the order vLLM reads them.
_NATIVE_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    inner = config.get("text_config")
    return inner if isinstance(inner, dict) else config


def _model_rope(config: dict[str, Any]) -> tuple[float, str | None]:
    """The backbone's RoPE base and the scaling it already ships with (None: plain RoPE)."""
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    theta = params.get("rope_theta", config.get("rope_theta", 10_000.0))
    shipped = params.get("rope_type", params.get("type"))
    return float(theta), (None if shipped in (None, "default") else str(shipped))


def _rope_dict(rope: RopeScaling, original: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rope_type": rope.rope_type,
        "factor": float(rope.factor),
        "original_max_position_embeddings": original,
    }
    for name in ("beta_fast", "beta_slow", "attention_factor"):
        value = getattr(rope, name)
        if value is not None:
            out[name] = value
    return out


def plan_window(settings: EngineSettings, config: dict[str, Any]) -> WindowPlan:
    """Decide the window and its scaling, or say why the settings cannot work for this backbone."""
    config = _text_config(config)
    native = next((config[k] for k in _NATIVE_KEYS if isinstance(config.get(k), int)), None)
    wanted = settings.context_length or settings.max_model_len
    if native is None or native < 16:
        if settings.context_length or settings.rope_scaling:
            raise WindowError(
                "the backbone's config.json gives no trained positions (max_position_embeddings): "
                "its native window is unknown, so no RoPE scaling can be planned; set max_model_len alone"
            )
        # Nothing to scale: the engine judges the checkpoint and the window (``known`` False).
        return WindowPlan(native=0, window=wanted or 0, known=False)
    theta, shipped = _model_rope(config)
    heads = config.get("num_attention_heads") or 1
    head_dim = config.get("head_dim") or (config.get("hidden_size") or 64 * heads) // heads
    partial = float((config.get("rope_parameters") or {}).get("partial_rotary_factor", 1.0))
    rotary = int(head_dim * partial)
    base = {"native": native, "rope_theta": theta, "rotary_dim": rotary}
    if (settings.context_length or settings.rope_scaling) and shipped is not None:
        raise WindowError(
            f"the backbone already ships with {shipped} RoPE scaling ({native} positions); "
            "set max_model_len up to that instead of adding another scaling"
        )

    if settings.context_length is not None:
        if settings.context_length <= native:
            return WindowPlan(window=settings.context_length, **base)
        factor = settings.context_length / native
        rope = {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": native}
        return WindowPlan(window=settings.context_length, rope=rope, **base)

    if settings.rope_scaling is not None:
        rope = settings.rope_scaling
        original = rope.original_max_position_embeddings or native
        limit = int(original * rope.factor)
        window = wanted or limit
        if window > limit:
            raise WindowError(
                f"max_model_len {window} is beyond what {rope.rope_type} factor {rope.factor:g} "
                f"allows over the backbone's {original} positions ({limit}); use factor >= "
                f"{window / original:.4g}, or context_length {window} to let Tailor pick YaRN"
            )
        return WindowPlan(window=window, rope=_rope_dict(rope, original), **base)

    if wanted is None or wanted <= native:
        return WindowPlan(window=wanted or native, **base)
    if os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "").lower() in ("1", "true"):
        return WindowPlan(window=wanted, extrapolated=True, **base)
    raise WindowError(
        f"max_model_len {wanted} is beyond the backbone's native window of {native} tokens; "
        f"use context_length {wanted} (`tailor serve --context-length {wanted}`: YaRN x"
        f"{wanted / native:.4g}) or set rope_scaling with factor >= {math.ceil(wanted / native * 100) / 100:g}"
    )
