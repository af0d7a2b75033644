"""Every setting is described and documented in the README."""

from __future__ import annotations

from pathlib import Path

from app.config import Settings
from app.settings_doc import settings_rows

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_setting_has_a_description() -> None:
    missing = [env for env, _, desc in settings_rows() if not desc.strip()]
    assert not missing, missing


def test_every_setting_is_in_the_readme() -> None:
    text = README.read_text()
    missing = [env for env, _, _ in settings_rows() if f"`{env}`" not in text]
    assert not missing, f"README lacks {missing}; paste `tailor settings` into it"


def test_env_parsing(monkeypatch) -> None:
    monkeypatch.setenv("TAILOR_API_KEYS", "a, b,,c")
    monkeypatch.setenv("TAILOR_ENGINE__MAX_MODEL_LEN", "4096")
    monkeypatch.setenv("TAILOR_ENGINE__ROPE_SCALING", '{"rope_type": "yarn", "factor": 2}')
    s = Settings()
    assert s.api_keys == ["a", "b", "c"] and s.auth_enabled
    assert s.engine.max_model_len == 4096
    assert s.engine.rope_scaling is not None and s.engine.rope_scaling.rope_type == "yarn"
