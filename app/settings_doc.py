"""Render the settings as a Markdown table (``tailor settings``, README "Settings")."""

from __future__ import annotations

from pydantic import BaseModel

from app.config import Settings


def _rows(model: type[BaseModel], prefix: str) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        env = f"{prefix}{name.upper()}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += _rows(annotation, f"{env}__")
            continue
        default = field.get_default(call_default_factory=True)
        shown = "(empty)" if default in ("", [], None) else str(default)
        rows.append((env, shown, field.description or ""))
    return rows


def settings_rows() -> list[tuple[str, str, str]]:
    return _rows(Settings, "TAILOR_")


def settings_table() -> str:
    lines = ["| variable | default | description |", "| --- | --- | --- |"]
    lines += [f"| `{env}` | `{default}` | {desc} |" for env, default, desc in settings_rows()]
    return "\n".join(lines)
