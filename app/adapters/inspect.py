"""Check a PEFT LoRA folder against the served backbone before anything loads it.

Only ``adapter_config.json`` and the safetensors header are read: weights stay on disk, and a
pickle ``adapter_model.bin`` is refused without being opened. The backbone's module shapes come
from its ``config.json``, instantiated on PyTorch's meta device (no memory, any architecture
transformers knows), so a LoRA for another model is refused here rather than at its first request.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from app.adapters.errors import AdapterError

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
PICKLE_WEIGHTS = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.default)?\.weight$")


@dataclass(frozen=True)
class AdapterInfo:
    rank: int
    alpha: float
    target_modules: list[str]
    size_bytes: int
    base_model: str | None


def _bad(message: str, code: str = "invalid_adapter") -> AdapterError:
    return AdapterError(400, message, code=code, param="path")


@lru_cache(maxsize=4)
def backbone_linears(model_path: str) -> dict[str, tuple[int, int]]:
    """``module path → (in_features, out_features)`` of every linear layer of the backbone."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {
        name: (module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }


def _read_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(f"{CONFIG} is not readable JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise _bad(f"{CONFIG} must be a JSON object.")
    return config


def peft_type(folder: Path) -> str | None:
    """``peft_type`` of a folder's adapter config (None when there is no readable one)."""
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return config.get("peft_type") if isinstance(config, dict) else None


def _read_header(path: Path) -> dict[str, list[int]]:
    """Tensor shapes from the safetensors header, without loading the tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: list(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad upload
        raise _bad(f"{WEIGHTS} is not a valid safetensors file: {exc}") from exc


def inspect_adapter(folder: Path, model_path: str, max_rank: int, max_bytes: int) -> AdapterInfo:
    """Validate ``folder`` as a LoRA for the backbone at ``model_path``; raise ``AdapterError``."""
    weights = folder / WEIGHTS
    if not weights.is_file():
        pickles = [n for n in PICKLE_WEIGHTS if (folder / n).exists()]
        if pickles:
            raise _bad(
                f"{pickles[0]} is a pickle file, which can run code when loaded: only "
                f"{WEIGHTS} is accepted (save with safe_serialization=True).",
                "unsafe_weights",
            )
        raise _bad(f"The adapter folder has no {WEIGHTS}.")
    if not (folder / CONFIG).is_file():
        raise _bad(f"The adapter folder has no {CONFIG}.")
    size = weights.stat().st_size
    if size > max_bytes:
        raise AdapterError(
            413, f"{WEIGHTS} has {size} bytes; the limit is {max_bytes}.", code="adapter_too_large"
        )
    config = _read_config(folder)
    if config.get("peft_type") != "LORA":
        raise _bad(
            "Only PEFT LoRA adapters are served, and AdaLoRA, LoHa, LoKr and IA3 adapters converted "
            f"to LoRA (peft_type is {config.get('peft_type')!r})."
        )
    for key, unsupported in (("use_dora", True), ("modules_to_save", None)):
        value = config.get(key)
        if (unsupported is True and value) or (unsupported is None and value):
            raise _bad(f"'{key}' adapters are not supported (only plain LoRA weights are served).")
    if config.get("bias", "none") != "none":
        raise _bad("LoRA bias terms are not supported (bias must be 'none').")
    rank = config.get("r")
    if not isinstance(rank, int) or rank < 1:
        raise _bad("adapter_config.json has no valid rank 'r'.")
    ranks = [rank, *(v for v in (config.get("rank_pattern") or {}).values() if isinstance(v, int))]
    if max(ranks) > max_rank:
        raise AdapterError(
            400,
            f"The adapter's rank {max(ranks)} exceeds this server's maximum of {max_rank} "
            "(TAILOR_ENGINE__MAX_LORA_RANK).",
            code="rank_too_large",
            param="path",
        )
    shapes = _read_header(weights)
    linears = backbone_linears(model_path)
    modules: set[str] = set()
    for key, shape in shapes.items():
        m = _KEY.match(key)
        if m is None:
            raise _bad(f"Unexpected tensor '{key}': only lora_A / lora_B weights are served.")
        module = m["module"]
        if module not in linears:
            raise _bad(
                f"The adapter targets '{module}', which the served backbone does not have: "
                "it was trained for another model.",
                "adapter_mismatch",
            )
        fan_in, fan_out = linears[module]
        expected = [shape[0], fan_in] if m["ab"] == "A" else [fan_out, shape[-1]]
        if len(shape) != 2 or shape != expected or shape[0 if m["ab"] == "A" else 1] > max_rank:
            raise _bad(
                f"Tensor '{key}' has shape {shape}; the served backbone needs {expected} "
                "(hidden size or layer shapes differ: it was trained for another model).",
                "adapter_mismatch",
            )
        modules.add(module.rsplit(".", 1)[-1])
    if not modules:
        raise _bad(f"{WEIGHTS} holds no LoRA weights.")
    return AdapterInfo(
        rank=rank,
        alpha=float(config.get("lora_alpha", rank)),
        target_modules=sorted(modules),
        size_bytes=size,
        base_model=config.get("base_model_name_or_path"),
    )
