"""A trained soft prompt on disk: one folder, written atomically, validated whenever it is read.

Layout: ``config.json`` (the method's config, sorted), ``prompt.safetensors`` (one tensor,
``prompt_embeddings``, fp32 — PEFT's key, so the files interoperate) and ``fingerprint.json``
(the backbone it was made for). The folder is assembled under a temporary name and renamed into
place, so a crash leaves the old prompt or the new one, never a mix. Only safetensors are read.
PEFT prompt-learning adapters (``adapter_config.json`` + ``adapter_model.safetensors``) are
imported through the same checks.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soft_prompts.base import MethodSpec, SoftPromptConfig, config_from_dict, spec_for
from soft_prompts.fingerprint import Fingerprint, FingerprintMismatch

TENSOR_KEY = "prompt_embeddings"
FILES = ("config.json", "prompt.safetensors", "fingerprint.json")
_PEFT_METHODS = {"PROMPT_TUNING": "prompt_tuning", "P_TUNING": "p_tuning", "PREFIX_TUNING": "prefix_tuning"}


class SoftPromptError(ValueError):
    """Unusable soft-prompt files: wrong format, shape, values or backbone."""


@dataclass
class SoftPrompt:
    config: SoftPromptConfig
    #: (virtual tokens, hidden) for embeddings; (virtual tokens, layers × 2 × kv dim) for prefixes.
    tensor: Any
    fingerprint: Fingerprint
    #: Free-form provenance (source, job id, training summary), saved in config.json.
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> MethodSpec:
        return spec_for(self.config.method)

    @property
    def num_virtual_tokens(self) -> int:
        return int(self.tensor.shape[0])

    def validate(self, served: Fingerprint | None = None) -> None:
        """Shape, dtype and finiteness against its fingerprint, and the fingerprint against ``served``."""
        import torch

        fp = self.fingerprint
        if served is not None:
            try:
                fp.check(served)
            except FingerprintMismatch as exc:
                raise SoftPromptError(str(exc)) from exc
        width = fp.hidden_size if self.spec.serving == "embeddings" else fp.num_layers * 2 * fp.kv_dim
        shape = (self.config.num_virtual_tokens, width)
        if not isinstance(self.tensor, torch.Tensor) or tuple(self.tensor.shape) != shape:
            got = (
                tuple(self.tensor.shape)
                if isinstance(self.tensor, torch.Tensor)
                else type(self.tensor).__name__
            )
            raise SoftPromptError(f"{self.config.method} tensor has shape {got}; this backbone needs {shape}")
        if not self.tensor.is_floating_point():
            raise SoftPromptError(f"the tensor must be floating point, not {self.tensor.dtype}")
        if not bool(torch.isfinite(self.tensor).all()):
            raise SoftPromptError("the tensor holds NaN or infinite values")


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def save(prompt: SoftPrompt, folder: str | Path) -> Path:
    """Write ``prompt`` as ``folder`` atomically (replacing an existing one)."""
    import torch
    from safetensors.torch import save_file

    prompt.validate()
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        config = {**prompt.config.to_dict(), "meta": prompt.meta}
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
        (tmp / "fingerprint.json").write_text(
            json.dumps(prompt.fingerprint.to_dict(), indent=2, sort_keys=True), encoding="utf-8"
        )
        tensor = prompt.tensor.detach().to("cpu", dtype=torch.float32).contiguous()
        save_file({TENSOR_KEY: tensor}, str(tmp / "prompt.safetensors"))
        for name in FILES:
            _fsync_file(tmp / name)
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(folder, old)
        os.replace(tmp, folder)
        fd = os.open(folder.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _read_tensor(data: bytes | Path) -> Any:
    from safetensors.torch import load, load_file

    try:
        tensors = load_file(str(data)) if isinstance(data, Path) else load(data)
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
        raise SoftPromptError(f"not a readable safetensors file: {exc}") from exc
    if TENSOR_KEY not in tensors:
        raise SoftPromptError(
            f"the safetensors file has no '{TENSOR_KEY}' tensor (found: {', '.join(tensors) or 'none'})"
        )
    return tensors[TENSOR_KEY].float()


def load(folder: str | Path, served: Fingerprint | None = None) -> SoftPrompt:
    """Read and validate a saved prompt; with ``served``, refuse one made for another backbone."""
    folder = Path(folder)
    missing = [n for n in FILES if not (folder / n).is_file()]
    if missing:
        raise SoftPromptError(f"{folder.name}: missing {', '.join(missing)}")
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        meta = raw.pop("meta", {}) or {}
        config = config_from_dict(raw)
        fp = Fingerprint.from_dict(json.loads((folder / "fingerprint.json").read_text(encoding="utf-8")))
    except (ValueError, TypeError, KeyError) as exc:
        raise SoftPromptError(f"{folder.name}: unreadable config: {exc}") from exc
    prompt = SoftPrompt(config, _read_tensor(folder / "prompt.safetensors"), fp, meta)
    prompt.validate(served)
    return prompt


def import_peft(adapter_config: dict[str, Any], weights: bytes, served: Fingerprint) -> SoftPrompt:
    """A PEFT prompt-learning adapter as a soft prompt for the served backbone.

    PEFT records sizes but no hash of the backbone, so its sizes must equal the served model's
    and the imported prompt is stamped with the served fingerprint.
    """
    peft_type = str(adapter_config.get("peft_type", ""))
    method = _PEFT_METHODS.get(peft_type)
    if method is None:
        raise SoftPromptError(
            f"peft_type {peft_type or 'missing'!s} is not a soft prompt; use PROMPT_TUNING, P_TUNING or PREFIX_TUNING"
        )
    if adapter_config.get("task_type") not in (None, "CAUSAL_LM"):
        raise SoftPromptError(f"task_type {adapter_config.get('task_type')} is not CAUSAL_LM")
    if int(adapter_config.get("num_transformer_submodules") or 1) != 1:
        raise SoftPromptError("num_transformer_submodules must be 1 (a decoder-only model)")
    try:
        n = int(adapter_config["num_virtual_tokens"])
        cfg_data: dict[str, Any] = {"method": method, "num_virtual_tokens": n}
        if method == "p_tuning":
            cfg_data["encoder"] = str(adapter_config.get("encoder_reparameterization_type") or "MLP").lower()
        if method == "prefix_tuning":
            cfg_data["projection"] = bool(adapter_config.get("prefix_projection", False))
        config = config_from_dict(cfg_data)
    except (KeyError, ValueError, TypeError) as exc:
        raise SoftPromptError(f"adapter_config.json: {exc}") from exc
    for key, mine in (("num_layers", served.num_layers),):
        if adapter_config.get(key) not in (None, mine):
            raise SoftPromptError(
                f"made for another backbone: {key} is {adapter_config.get(key)}, the served model has {mine}"
            )
    fp = Fingerprint(
        **{**served.to_dict(), "model_id": str(adapter_config.get("base_model_name_or_path") or "")}
    )
    prompt = SoftPrompt(config, _read_tensor(weights), fp, {"source": "import", "peft_type": peft_type})
    prompt.validate()
    prompt.fingerprint = served
    return prompt
