"""The filter language parsed once, rendered as SQL (today's store) and as Milvus expressions."""

from __future__ import annotations

import pytest

from indexers.store.filters import FilterError, milvus_expression, milvus_literal, parse
from indexers.store.sqlite_store import compile_filter

BAD = [
    ({"a b": 1}, "invalid filter field"),
    ({"x": {}}, "empty condition"),
    ({"x": {"$regex": "a"}}, "unknown filter operator"),
    ({"x": {"$in": []}}, "needs a list of 1 to 1000"),
    ({"x": {"$in": list(range(1001))}}, "needs a list of 1 to 1000"),
    ({"x": {"$eq": [1]}}, "filter values must be"),
    ({"x": {"$eq": {"y": 1}}}, "filter values must be"),
    ({"x": float("nan")}, "finite"),
    ({'x"]': 1}, "invalid filter field"),
]


@pytest.mark.parametrize(("flt", "message"), BAD)
def test_both_stores_refuse_the_same_filters_with_the_same_words(flt, message) -> None:
    for render in (compile_filter, milvus_expression):
        with pytest.raises(FilterError, match=message):
            render(flt)


def test_fields_and_operators_as_milvus_expressions() -> None:
    flt = {
        "document_id": "lease-1",
        "language": {"$ne": "en"},
        "page": {"$gte": 2, "$lt": 10},
        "year": {"$in": [2023, 2024]},
        "court": {"$nin": ["a", "b"]},
        "urgent": True,
        "owner": None,
        "score": {"$gt": 0.5},
        "parent_id": {"$ne": None},
    }
    assert milvus_expression(flt) == (
        '(doc_id == "lease-1") and (doc_language != "en") and (page >= 2) and (page < 10) and '
        '(metadata["year"] == 2023 or metadata["year"] == 2024) and '
        '(metadata["court"] != "a" and metadata["court"] != "b") and '
        '(metadata["urgent"] == true) and (metadata["owner"] is null) and (metadata["score"] > 0.5) and '
        "(doc_parent_id is not null)"
    )
    assert milvus_expression(None) == "" and milvus_expression({}) == ""
    # the SQL side reads the same conditions (booleans as SQLite stores them)
    where, params = compile_filter({"urgent": True, "page": {"$in": [1, 2]}})
    assert where == "json_extract(d.metadata, ?) = ? AND c.page IN (?,?)"
    assert params == ['$."urgent"', 1, 1, 2]
    assert [c.where for c in parse(flt)][:3] == ["document", "document", "chunk"]


def _closing_quote(literal: str) -> int:
    """Index of the first unescaped quote after the opening one (Milvus's string lexing)."""
    i = 1
    while i < len(literal):
        if literal[i] == "\\":
            i += 2
            continue
        if literal[i] == '"':
            return i
        i += 1
    return -1


@pytest.mark.parametrize(
    "value",
    [
        'd1" or id != "',
        "back\\slash",
        "trailing\\",
        "new\nline",
        'x\\" or true or "',
        "tab\tand\x00nul",
        "ünï ✓",
    ],
)
def test_a_string_value_never_ends_its_literal_early(value: str) -> None:
    literal = milvus_literal(value)
    assert literal.startswith('"') and _closing_quote(literal) == len(literal) - 1
    expr = milvus_expression({"title": value})
    assert expr.count("(") == 1 and expr.startswith('(doc_title == "') and expr.endswith('")')
