"""The bundled models are found and the converted checkpoint is trusted only when complete."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.checkpoints.prepare import (
    ModelPrepareError,
    embedder_dir,
    is_prepared,
    prepare_backbone,
    resolve_backbone,
)


def test_prepare_is_idempotent(model_path: str) -> None:
    prepared = prepare_backbone(Path(model_path).parent.parent)
    assert not prepared.created and str(prepared.path) == model_path
    assert resolve_backbone("", Path(model_path).parent.parent) == model_path
    assert resolve_backbone(model_path, Path("/nowhere")) == model_path


@pytest.mark.parametrize(
    "model, message",
    [
        ("/no/such/checkpoint", "does not exist"),
        ("./relative/missing", "does not exist"),
        ("some-org/not-in-cache-model", "local Hugging Face cache"),
        ("{tmp}", "without config.json"),
        ("{tmp}/file.bin", "is a file"),
    ],
)
def test_configured_model_is_checked_before_loading(tmp_path: Path, model: str, message: str) -> None:
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ModelPrepareError, match=message):
        resolve_backbone(model.format(tmp=tmp_path), tmp_path)


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
