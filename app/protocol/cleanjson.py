"""JSON bodies with lone UTF-16 surrogates (``"\\ud800"`` is valid JSON) made safe, once, at the edge.

Python decodes such escapes into strings that every tokenizer and encoder downstream rejects with
an error deep inside a request; they are replaced by U+FFFD as the body is parsed, for every
route, so no handler has to remember.
"""

from __future__ import annotations

import json
from typing import Any


def clean_text(value: str) -> str:
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in value)
    return value


def clean(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [clean(v) for v in value]
    if isinstance(value, dict):
        return {clean_text(k): clean(v) for k, v in value.items()}
    return value


def loads(data: bytes | str) -> Any:
    return clean(json.loads(data))
