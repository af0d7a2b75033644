"""``tailor soft-prompts``: list, import (a local PEFT prompt-learning folder) and delete on a server."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from app.client_cli import _raise_for_error, console
from app.client_tuning import _client

PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


def soft_prompts_list(url: str, key: str | None) -> None:
    with _client(url, key) as client:
        resp = client.get("/v1/soft-prompts")
        _raise_for_error(resp)
        body = resp.json()
    table = Table("name", "method", "virtual tokens", "served by", "source", "domain")
    for p in body["data"]:
        table.add_row(
            p["id"], p["method"], str(p["num_virtual_tokens"]), p["served_by"], p["source"], p["domain"] or ""
        )
    Console().print(table)
    for w in body.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {w}")


def soft_prompts_import(url: str, key: str | None, name: str, folder: Path) -> None:
    missing = [n for n in PEFT_FILES if not (folder / n).is_file()]
    if missing:
        raise typer.BadParameter(f"{folder} has no {missing[0]} (a PEFT prompt-learning adapter folder)")
    files = [("files", (n, (folder / n).read_bytes())) for n in PEFT_FILES]
    with _client(url, key) as client:
        resp = client.post("/v1/soft-prompts/import", data={"name": name}, files=files)
        _raise_for_error(resp)
        p = resp.json()
    console.print(f"imported {p['id']} ({p['method']}, {p['num_virtual_tokens']} virtual tokens)")


def soft_prompts_delete(url: str, key: str | None, name: str, force: bool = False) -> None:
    with _client(url, key) as client:
        resp = client.delete(f"/v1/soft-prompts/{name}", params={"force": "true"} if force else None)
        _raise_for_error(resp)
    detached = resp.json().get("detached_from") or []
    console.print(f"deleted {name}" + (f" (detached from {', '.join(detached)})" if detached else ""))
