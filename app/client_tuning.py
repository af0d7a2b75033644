"""``tailor adapters`` and ``tailor finetune``: adapters, soft prompts and fine-tuning on a server.

Like ``tailor ingest`` they go through the HTTP API (same auth, the server stays the only writer).
``finetune`` uploads the file, starts the job and follows it with a progress bar (step, epoch,
loss) until the adapter or soft prompt is registered; it prints the ``fine_tuned_model`` name.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.client_cli import _raise_for_error, console


def _client(url: str, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=600)


def adapters_list(url: str, key: str | None) -> None:
    with _client(url, key) as client:
        resp = client.get("/v1/adapters")
        _raise_for_error(resp)
        body = resp.json()
    table = Table("name", "rank", "alpha", "modules", "source", "domain", "path")
    for a in body["data"]:
        table.add_row(
            a["id"],
            str(a["rank"]),
            f"{a['alpha']:g}",
            ",".join(a["target_modules"]),
            a["source"],
            a["domain"] or "",
            a["path"],
        )
    Console().print(table)
    for w in body.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {w}")


def adapters_load(url: str, key: str | None, name: str, path: str, upload: bool) -> None:
    """Load a folder inside the server's adapters dir, or (``upload``) send a local PEFT folder."""
    with _client(url, key) as client:
        if upload:
            folder = Path(path)
            names = ("adapter_config.json", "adapter_model.safetensors")
            missing = [n for n in names if not (folder / n).is_file()]
            if missing:
                raise typer.BadParameter(f"{folder} has no {missing[0]}")
            files = [("files", (n, (folder / n).read_bytes())) for n in names]
            resp = client.post("/v1/adapters", data={"name": name}, files=files)
        else:
            resp = client.post("/v1/adapters", json={"name": name, "path": path})
        _raise_for_error(resp)
        a = resp.json()
    console.print(f"loaded {a['id']} (rank {a['rank']}, {', '.join(a['target_modules'])})")


def adapters_unload(url: str, key: str | None, name: str, force: bool = False) -> None:
    with _client(url, key) as client:
        resp = client.delete(f"/v1/adapters/{name}", params={"force": "true"} if force else None)
        _raise_for_error(resp)
    detached = resp.json().get("detached_from") or []
    console.print(f"unloaded {name}" + (f" (detached from {', '.join(detached)})" if detached else ""))


def finetune(
    url: str,
    key: str | None,
    file: Path | None,
    model: str,
    method: str,
    validation: Path | None,
    suffix: str | None,
    epochs: int | None,
    rank: int | None,
    poll: float = 1.0,
    virtual_tokens: int | None = None,
    init_text: str | None = None,
) -> None:
    """Train; ``file`` None trains a soft prompt on the domain's (``model``) ingested documents."""
    hyper: dict = {}
    for field, value in (
        ("n_epochs", epochs),
        ("rank", rank),
        ("num_virtual_tokens", virtual_tokens),
        ("init_text", init_text),
    ):
        if value is not None:
            hyper[field] = value
    with _client(url, key) as client:

        def upload(path: Path) -> str:
            resp = client.post(
                "/v1/files", data={"purpose": "fine-tune"}, files={"file": (path.name, path.read_bytes())}
            )
            _raise_for_error(resp)
            return resp.json()["id"]

        body: dict = {"model": model, "method": {"type": method, method: {"hyperparameters": hyper}}}
        if file is not None:
            body["training_file"] = upload(file)
        if validation is not None:
            body["validation_file"] = upload(validation)
        if suffix:
            body["suffix"] = suffix
        resp = client.post("/v1/fine_tuning/jobs", json=body)
        _raise_for_error(resp)
        job = resp.json()
        console.print(f"job {job['id']}: {job['hyperparameters']}")
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("queued", total=None, info="")
            while job["status"] in ("validating_files", "queued", "running"):
                time.sleep(poll)
                resp = client.get(f"/v1/fine_tuning/jobs/{job['id']}")
                _raise_for_error(resp)
                job = resp.json()
                p = job["progress"]
                info = f"epoch {p['epoch']}/{p['n_epochs']}"
                if p.get("train_loss") is not None:
                    info += f"  loss {p['train_loss']:.4f}"
                if p.get("valid_loss") is not None:
                    info += f"  valid {p['valid_loss']:.4f}"
                bar.update(
                    task,
                    description=job["status"],
                    total=p["total_steps"] or None,
                    completed=p["step"],
                    info=info,
                )
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        console.print(f"[red]job {job['id']} {job['status']}:[/red] {error.get('message', '')}")
        raise typer.Exit(1)
    console.print(f"trained {job['trained_tokens']} tokens; call it as model={job['fine_tuned_model']}")
    typer.echo(job["fine_tuned_model"])
