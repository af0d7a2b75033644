"""The metadata filter language, parsed once and rendered for each store.

``{"field": value | {"$op": value}}`` with ``$eq $ne $gt $gte $lt $lte $in $nin``: fields are
document columns, chunk locations (page, section, sheet, row) or user metadata keys. ``parse``
validates everything a client sent (field names, operators, value types, list sizes) and gives
plain ``Condition``s; renderers only spell them: SQL with bound parameters
(``sqlite_store.compile_filter``) or a Milvus boolean expression (``milvus_expression``), where no
text from the client reaches the expression except as an escaped literal.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

DOCUMENT_FIELDS = ("id", "filename", "title", "content_type", "language", "parent_id", "status", "sha256")
CHUNK_FIELDS = ("page", "section", "sheet", "row")
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
COMPARISONS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
MEMBERSHIP = ("$in", "$nin")


class FilterError(ValueError):
    """A metadata filter that cannot be applied (unknown operator, bad key or value)."""


Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class Condition:
    """One validated comparison: ``where`` says which kind of field ``key`` names."""

    where: Literal["document", "chunk", "metadata"]
    key: str
    op: str
    value: Scalar | tuple[Scalar, ...]


def _scalar(value: Any) -> Scalar:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FilterError("filter numbers must be finite")
        return value
    raise FilterError(f"filter values must be strings, numbers, booleans or null, not {type(value).__name__}")


def parse(flt: dict[str, Any] | None) -> list[Condition]:
    """Every condition of a filter, validated; ``FilterError`` names what is wrong."""
    out: list[Condition] = []
    for key, cond in (flt or {}).items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise FilterError(f"invalid filter field {key!r}")
        if key == "document_id":
            where, name = "document", "id"
        elif key in DOCUMENT_FIELDS:
            where, name = "document", key
        elif key in CHUNK_FIELDS:
            where, name = "chunk", key
        else:
            where, name = "metadata", key
        ops = cond if isinstance(cond, dict) else {"$eq": cond}
        if not ops:
            raise FilterError(f"empty condition for {key!r}")
        for op, value in ops.items():
            if op in MEMBERSHIP:
                if not isinstance(value, list) or not value or len(value) > 1000:
                    raise FilterError(f"{op} needs a list of 1 to 1000 values")
                out.append(Condition(where, name, op, tuple(_scalar(v) for v in value)))
            elif op in COMPARISONS:
                out.append(Condition(where, name, op, _scalar(value)))
            else:
                raise FilterError(
                    f"unknown filter operator {op!r}; use one of {', '.join([*COMPARISONS, *MEMBERSHIP])}"
                )
    return out


# -- Milvus ----------------------------------------------------------------------------------------
_MILVUS_OPS = {"$eq": "==", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def milvus_literal(value: Scalar) -> str:
    """A value as a Milvus expression literal. Milvus Lite takes no bound parameters, so strings are
    quoted with every backslash, quote and control character escaped: a value can never end its
    literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        body = "".join(_ESCAPES.get(ch, ch if ch.isprintable() else f"\\u{ord(ch):04x}") for ch in value)
        return f'"{body}"'
    raise FilterError("null is only allowed with $eq and $ne")


def milvus_field(condition: Condition, document_prefix: str = "doc_") -> str:
    """The field a condition reads: document columns as ``doc_<name>`` scalars of each chunk row,
    chunk locations by name, metadata keys inside the JSON field (keys are validated names)."""
    if condition.where == "document":
        return f"{document_prefix}{condition.key}"
    if condition.where == "chunk":
        return condition.key
    return f'metadata["{condition.key}"]'


def milvus_expression(flt: dict[str, Any] | None, document_prefix: str = "doc_") -> str:
    """The filter as a Milvus boolean expression ("" when there is none)."""
    clauses = []
    for c in parse(flt):
        field = milvus_field(c, document_prefix)
        if c.op in MEMBERSHIP and c.where == "metadata":
            # Milvus Lite takes `in` on scalar fields only: a JSON key's list is spelled out
            op, join = ("!=", " and ") if c.op == "$nin" else ("==", " or ")
            clauses.append(join.join(f"{field} {op} {milvus_literal(v)}" for v in c.value))
        elif c.op in MEMBERSHIP:
            values = ", ".join(milvus_literal(v) for v in c.value)
            clauses.append(f"{field} {'not in' if c.op == '$nin' else 'in'} [{values}]")
        elif c.value is None and c.op in ("$eq", "$ne"):
            clauses.append(f"{field} is {'not ' if c.op == '$ne' else ''}null")
        else:
            clauses.append(f"{field} {_MILVUS_OPS[c.op]} {milvus_literal(c.value)}")
    return " and ".join(f"({c})" for c in clauses)
