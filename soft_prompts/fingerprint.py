"""Which backbone a soft prompt belongs to, so one is never applied to another model.

Vectors trained for one model are noise to another with the same shapes (a fine-tune of it, a
re-quantization), so besides the sizes the fingerprint holds a SHA-256 of the input embedding
matrix as stored in the checkpoint. Read from the checkpoint's files (``config.json`` and its
safetensors), never by loading the model, so the service and the trainer compute the same value.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

EMBEDDING_KEYS = ("model.embed_tokens.weight", "embed_tokens.weight", "transformer.wte.weight")


class FingerprintMismatch(ValueError):
    """A soft prompt made for another backbone."""


@dataclass(frozen=True)
class Fingerprint:
    model_id: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    #: SHA-256 of the embedding matrix's bytes (empty when unknown, e.g. an imported PEFT prompt
    #: whose sizes match: the service then stamps its own backbone's hash on it).
    embedding_sha256: str = ""

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def check(self, served: Fingerprint) -> None:
        """Raise ``FingerprintMismatch`` naming the first difference (the model id is advisory)."""
        for name in (
            "hidden_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "vocab_size",
            "embedding_sha256",
        ):
            mine, theirs = getattr(self, name), getattr(served, name)
            if mine != theirs:
                raise FingerprintMismatch(
                    f"made for another backbone ({self.model_id or 'unknown'}): {name} is {mine}, "
                    f"the served model ({served.model_id}) has {theirs}"
                )


def _embedding_file(folder: Path) -> tuple[Path, str]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        for key in EMBEDDING_KEYS:
            if key in weight_map:
                return folder / weight_map[key], key
    single = folder / "model.safetensors"
    if single.exists():
        from safetensors import safe_open

        with safe_open(str(single), "pt") as f:
            for key in EMBEDDING_KEYS:
                if key in f.keys():  # noqa: SIM118 - safe_open has no __contains__
                    return single, key
    raise FileNotFoundError(f"no safetensors embedding matrix in {folder}")


def embedding_matrix(model_dir: str | Path) -> Any:
    """The input embedding matrix as stored (a torch tensor in the checkpoint's dtype)."""
    from safetensors import safe_open

    path, key = _embedding_file(Path(model_dir))
    with safe_open(str(path), "pt") as f:
        return f.get_tensor(key)


@lru_cache(maxsize=8)
def _cached(model_dir: str, mtime: float) -> Fingerprint:
    import torch

    folder = Path(model_dir)
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    cfg = cfg.get("text_config", cfg)
    heads = int(cfg["num_attention_heads"])
    matrix = embedding_matrix(folder)
    digest = hashlib.sha256(f"{matrix.dtype}{tuple(matrix.shape)}".encode())
    digest.update(matrix.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return Fingerprint(
        model_id=cfg.get("_name_or_path") or folder.name,
        hidden_size=int(cfg["hidden_size"]),
        num_layers=int(cfg["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
        vocab_size=int(matrix.shape[0]),
        embedding_sha256=digest.hexdigest(),
    )


def fingerprint_of(model_dir: str | Path) -> Fingerprint:
    """The fingerprint of a local Hugging Face checkpoint (cached per folder and modification time)."""
    folder = Path(model_dir).resolve()
    return _cached(str(folder), (folder / "config.json").stat().st_mtime)
