"""Tabular and record data: CSV/TSV (rows with headers), JSON and JSON Lines (one unit per record)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from indexers.documents import LoadedDocument, LoaderError, Location, Section
from indexers.loaders.office import MAX_ROWS, rows_section
from indexers.loaders.text import decode


def load_csv(data: bytes, filename: str) -> LoadedDocument:
    text = decode(data)
    sample = text[:8192]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel_tab if filename.lower().endswith(".tsv") else csv.excel
    doc = LoadedDocument("text/csv")
    rows: list[list[str]] = []
    for i, row in enumerate(csv.reader(io.StringIO(text), dialect)):
        if i >= MAX_ROWS:
            doc.warnings.append(f"only the first {MAX_ROWS} rows were read")
            break
        rows.append([c.strip() for c in row])
    section = rows_section(rows, None)
    if section:
        doc.sections.append(section)
    return doc


def _flatten(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        out: list[str] = []
        for k, v in value.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            return [f"{prefix}: {', '.join(str(v) for v in value)}"] if value else []
        out = []
        for i, v in enumerate(value):
            out += _flatten(v, f"{prefix}[{i}]")
        return out
    if value is None or value == "":
        return []
    return [f"{prefix}: {value}" if prefix else str(value)]


def _records_section(records: list[Any]) -> Section | None:
    units = []
    for i, record in enumerate(records, start=1):
        text = "\n".join(_flatten(record))
        if text.strip():
            units.append((text, Location(row=i)))
    if not units:
        return None
    return Section("\n\n".join(u for u, _ in units), Location(), units)


def load_json(data: bytes, filename: str) -> LoadedDocument:
    try:
        value = json.loads(decode(data))
    except json.JSONDecodeError as exc:
        raise LoaderError(f"invalid JSON: {exc}") from exc
    if isinstance(value, dict):
        lists = [
            v for v in value.values() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)
        ]
        records = lists[0] if len(lists) == 1 and len(value) <= 3 else [value]
    elif isinstance(value, list):
        records = value
    else:
        records = [value]
    doc = LoadedDocument("application/json", page_count=None)
    section = _records_section(records)
    if section:
        doc.sections.append(section)
    return doc


def load_jsonl(data: bytes, filename: str) -> LoadedDocument:
    doc = LoadedDocument("application/x-ndjson")
    records = []
    for number, line in enumerate(decode(data).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            doc.warnings.append(f"line {number}: invalid JSON ({exc.msg}), skipped")
    if not records:
        raise LoaderError("no valid JSON record in the file")
    section = _records_section(records)
    if section:
        doc.sections.append(section)
    return doc
