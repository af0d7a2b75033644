"""The bundled models are found and the converted checkpoint is trusted only when complete."""

from __future__ import annotations

import shutil
from pathlib import Path

from app.models.prepare import embedder_dir, is_prepared, prepare_backbone, resolve_backbone


def test_prepare_is_idempotent(model_path: str) -> None:
    prepared = prepare_backbone(Path(model_path).parent.parent)
    assert not prepared.created and str(prepared.path) == model_path
    assert resolve_backbone("", Path(model_path).parent.parent) == model_path
    assert resolve_backbone("/some/dir", Path("/nowhere")) == "/some/dir"


def test_incomplete_checkpoint_is_not_trusted(model_path: str, tmp_path: Path) -> None:
    copy = tmp_path / "ckpt"
    copy.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "tailor-prepared.json"):
        shutil.copy(Path(model_path) / name, copy / name)
    assert not is_prepared(copy)  # no weights
    (copy / "model.safetensors").write_bytes(b"")
    assert is_prepared(copy)
    assert not is_prepared(copy, source_sha="0" * 64)  # marker from another source


def test_embedder_is_bundled() -> None:
    assert (embedder_dir() / "model.safetensors").is_file()
