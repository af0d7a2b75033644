"""Fine-tuning hyperparameters: each method's own fields, defaults and limits, validated once.

Every job request goes through ``job_method`` (which method, which hyperparameters) and
``resolve_hyperparameters`` (defaults filled in, every value checked): a field that belongs to
another method, or a value out of range, is a 400 naming ``hyperparameters.<field>`` before
anything is queued. The trainer (``app.finetune.worker``) reads the resolved dictionary as it is.
"""

from __future__ import annotations

import math
import re
from typing import Any

from app.config import Settings
from app.errors import ServiceError
from app.protocol.finetune import FineTuningJobCreate, Hyperparameters
from app.protocol.profiles import DomainProfile
from soft_prompts import config_from_dict

BASE_LEARNING_RATE = 1e-3
DEFAULT_RANK = 8
DEFAULT_DROPOUT = 0.05
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
#: auto epochs: at least this many examples seen in all (as OpenAI's auto does), at most 25 epochs
MIN_EXAMPLES_SEEN = 100
LORA_METHODS = ("supervised", "lora")
#: PEFT adapters vLLM does not serve as they are: trained with PEFT, served as a converted LoRA.
CONVERTED_METHODS = ("adalora", "loha", "lokr", "ia3")
SOFT_PROMPT_METHODS = ("prompt_tuning", "p_tuning", "prefix_tuning")
#: Base learning rates (× learning_rate_multiplier). Soft prompts move a few thousand parameters
#: against a frozen model and need far larger steps than LoRA; so does IA3 (one scale per channel).
LEARNING_RATES = {
    "lora": BASE_LEARNING_RATE,
    "adalora": BASE_LEARNING_RATE,
    "loha": BASE_LEARNING_RATE,
    "lokr": BASE_LEARNING_RATE,
    "ia3": 1e-2,
    "prompt_tuning": 3e-2,
    "p_tuning": 1e-2,
    "prefix_tuning": 1e-3,
}
DEFAULT_VIRTUAL_TOKENS = 20
DEFAULT_PATIENCE = 2
LORA_FIELDS = ("rank", "alpha", "dropout", "target_modules")
#: Fields each adapter method takes besides OpenAI's and early_stopping_patience.
ADAPTER_FIELDS = {
    "lora": LORA_FIELDS,
    "adalora": (*LORA_FIELDS, "init_rank"),
    "loha": LORA_FIELDS,
    "lokr": (*LORA_FIELDS, "decompose_factor"),
    "ia3": ("target_modules", "feedforward_modules"),
}
#: PEFT's IA3 targets for Llama-style backbones: keys, values and the MLP's down projection (its input).
IA3_TARGETS = ["k_proj", "v_proj", "down_proj"]
IA3_FEEDFORWARD = ["down_proj"]
#: LoHa's and LoKr's default rank: their weight delta is a product of two rank-r factors (Hadamard,
#: Kronecker with both sides decomposed), so its rank is at most r² = 16, the engine's default
#: largest LoRA rank: the conversion keeps all of it. Larger ranks are converted by truncated SVD.
PRODUCT_RANK = 4
#: AdaLoRA's budget schedule: full rank for the first 10 % of steps, the final budget for the last 20 %.
ADALORA_WARMUP, ADALORA_FINAL = 0.1, 0.2
#: Fields each soft-prompt method takes besides OpenAI's and early_stopping_patience.
SOFT_FIELDS = {
    "prompt_tuning": ("num_virtual_tokens", "init", "init_text"),
    "p_tuning": ("num_virtual_tokens", "encoder", "encoder_hidden_size"),
    "prefix_tuning": ("num_virtual_tokens", "encoder_hidden_size", "projection"),
}
#: Without a validation file, soft-prompt jobs of at least this many examples hold out 10 %.
AUTO_SPLIT_MIN = 20


class FineTuneError(ServiceError):
    """A refused job request; ``status`` is the HTTP status."""


def _bad(message: str, param: str) -> FineTuneError:
    return FineTuneError(400, message, code="invalid_hyperparameters", param=f"hyperparameters.{param}")


def adapter_kind(kind: str) -> str:
    """``supervised`` trains a LoRA; every other method is its own kind."""
    return "lora" if kind in LORA_METHODS else kind


def _check_fields(kind: str, h: Hyperparameters) -> None:
    """A field that belongs to another method is refused rather than silently ignored."""
    own = set(SOFT_FIELDS[kind]) if kind in SOFT_PROMPT_METHODS else set(ADAPTER_FIELDS[adapter_kind(kind)])
    every = set().union(*ADAPTER_FIELDS.values(), *SOFT_FIELDS.values())
    for name in sorted((h.model_fields_set & every) - own):
        if getattr(h, name) is not None:
            raise _bad(f"{name} does not apply to method '{kind}'.", name)


def _soft_prompt_config(kind: str, h: Hyperparameters, profile: DomainProfile | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "method": kind,
        "num_virtual_tokens": h.num_virtual_tokens or DEFAULT_VIRTUAL_TOKENS,
    }
    if kind == "prompt_tuning":
        text = h.init_text or (profile.description if profile is not None and profile.description else None)
        init = h.init or ("text" if text else "vocab")
        data |= {"init": init, "init_text": text if init == "text" else None}
    elif kind == "p_tuning":
        data |= {"encoder": h.encoder or "mlp"}
        if h.encoder_hidden_size:
            data["encoder_hidden_size"] = h.encoder_hidden_size
    else:
        data |= {"projection": True if h.projection is None else h.projection}
        if h.encoder_hidden_size:
            data["encoder_hidden_size"] = h.encoder_hidden_size
    try:
        return config_from_dict(data).to_dict()
    except ValueError as exc:
        raise _bad(str(exc), "init_text" if "init" in str(exc) else "num_virtual_tokens") from exc


def resolve_hyperparameters(
    kind: str, h: Hyperparameters, n: int, settings: Settings, profile: DomainProfile | None = None
) -> dict[str, Any]:
    """Every setting the trainer needs, defaults filled in; 400 for values out of range."""
    limits = settings.training
    _check_fields(kind, h)
    if h.n_epochs == "auto":
        epochs = 3 if n * 3 >= MIN_EXAMPLES_SEEN else min(25, math.ceil(MIN_EXAMPLES_SEEN / n))
    elif not 1 <= h.n_epochs <= limits.max_epochs:
        raise _bad(f"n_epochs must be 1 to {limits.max_epochs}.", "n_epochs")
    else:
        epochs = h.n_epochs
    if h.batch_size == "auto":
        batch = min(n, 4 if n < 256 else 8)
    elif not 1 <= h.batch_size <= 256:
        raise _bad("batch_size must be 1 to 256.", "batch_size")
    else:
        batch = h.batch_size
    multiplier = 1.0 if h.learning_rate_multiplier == "auto" else float(h.learning_rate_multiplier)
    if not 0 < multiplier <= 10:
        raise _bad("learning_rate_multiplier must be above 0 and at most 10.", "learning_rate_multiplier")
    soft = kind in SOFT_PROMPT_METHODS
    patience = h.early_stopping_patience
    out: dict[str, Any] = {
        "n_epochs": epochs,
        "batch_size": batch,
        "learning_rate_multiplier": multiplier,
        "learning_rate": LEARNING_RATES[kind if soft else adapter_kind(kind)] * multiplier,
        "early_stopping_patience": (DEFAULT_PATIENCE if soft else 0) if patience is None else patience,
    }
    if soft:
        config = _soft_prompt_config(kind, h, profile)
        out["soft_prompt"] = config
        out |= {k: v for k, v in config.items() if k != "method"}
        return out
    return out | _adapter_hyperparameters(adapter_kind(kind), h, settings)


def _module_names(names: list[str], param: str) -> list[str]:
    if any(not re.fullmatch(r"[A-Za-z0-9_.]{1,64}", t) for t in names):
        raise _bad(f"{param} are module names such as q_proj.", param)
    return names


def _adapter_hyperparameters(kind: str, h: Hyperparameters, settings: Settings) -> dict[str, Any]:
    """The method's own settings, defaults filled in, 400 naming the field for values out of range."""
    limits = settings.training
    if kind == "ia3":
        targets = _module_names(h.target_modules or IA3_TARGETS, "target_modules")
        default_ff = [t for t in IA3_FEEDFORWARD if t in targets]
        feedforward = _module_names(
            default_ff if h.feedforward_modules is None else h.feedforward_modules, "feedforward_modules"
        )
        if not set(feedforward) <= set(targets):
            raise _bad("feedforward_modules must be a subset of target_modules.", "feedforward_modules")
        return {"target_modules": targets, "feedforward_modules": feedforward}
    rank = h.rank or (PRODUCT_RANK if kind in ("loha", "lokr") else DEFAULT_RANK)
    # LoRA and AdaLoRA are served at their trained (final) rank; LoHa and LoKr are trained at theirs
    # and converted at the smallest rank that keeps the configured fidelity, capped by the engine's
    served_cap = settings.engine.max_lora_rank if kind in ("lora", "adalora") else limits.max_rank
    cap = min(limits.max_rank, served_cap)
    if rank > cap:
        raise _bad(f"rank {rank} exceeds the largest this server trains and serves ({cap}).", "rank")
    out: dict[str, Any] = {
        "rank": rank,
        "alpha": float(h.alpha or (rank if kind in ("loha", "lokr") else 2 * rank)),
        "dropout": (0.0 if kind in ("loha", "lokr") else DEFAULT_DROPOUT) if h.dropout is None else h.dropout,
        "target_modules": _module_names(h.target_modules or DEFAULT_TARGETS, "target_modules"),
    }
    if kind == "adalora":
        init_rank = h.init_rank or max(rank, math.ceil(rank * 1.5))
        if not rank <= init_rank <= limits.max_rank:
            raise _bad(
                f"init_rank must be at least rank ({rank}) and at most {limits.max_rank}.", "init_rank"
            )
        out |= {"init_rank": init_rank, "warmup_fraction": ADALORA_WARMUP, "final_fraction": ADALORA_FINAL}
    elif kind == "lokr":
        factor = -1 if h.decompose_factor is None else h.decompose_factor
        if factor == 0:
            raise _bad("decompose_factor must be -1 (automatic) or a positive size.", "decompose_factor")
        out["decompose_factor"] = factor
    return out


def job_method(req: FineTuningJobCreate) -> tuple[str, Hyperparameters]:
    method = req.method
    kind = method.type if method else "supervised"
    if kind not in LORA_METHODS + CONVERTED_METHODS + SOFT_PROMPT_METHODS:
        raise FineTuneError(
            400,
            f"Method '{kind}' is not supported; use 'supervised' or 'lora' (a LoRA adapter), "
            "'adalora', 'loha', 'lokr' or 'ia3' (PEFT's adapter of that kind, served as a LoRA), or "
            "'prompt_tuning', 'p_tuning' or 'prefix_tuning' (a soft prompt).",
            code="unsupported_method",
            param="method.type",
        )
    params = getattr(method, kind, None) if method else None
    return kind, (params.hyperparameters if params else req.hyperparameters or Hyperparameters())
