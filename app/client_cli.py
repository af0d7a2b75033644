"""``tailor ingest`` and ``tailor search``: talk to a running server over HTTP.

The CLI goes through the server, not the files, so the server stays the only writer of a store
and the same auth applies. Uploads are sent in batches as jobs; a progress bar follows them.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


def iter_files(paths: list[Path]) -> Iterator[tuple[Path, str]]:
    """(file, name to send): files inside a folder keep their path below it, so that
    ``2023/minutes.pdf`` and ``2024/minutes.pdf`` stay two documents."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                rel = child.relative_to(path)
                if child.is_file() and not any(part.startswith(".") for part in rel.parts):
                    yield child, rel.as_posix()
        elif path.is_file():
            yield path, path.name
        else:
            raise typer.BadParameter(f"{path} does not exist")


def batches(
    files: list[tuple[Path, str]], max_files: int, max_bytes: int
) -> Iterator[list[tuple[Path, str]]]:
    batch: list[tuple[Path, str]] = []
    size = 0
    for f in files:
        n = f[0].stat().st_size
        if batch and (len(batch) >= max_files or size + n > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(f)
        size += n
    if batch:
        yield batch


def _raise_for_error(resp: httpx.Response) -> None:
    if resp.status_code >= 400:
        try:
            message = resp.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = resp.text
        console.print(f"[red]error {resp.status_code}:[/red] {message}")
        raise typer.Exit(1)


def follow_job(client: httpx.Client, job: dict, on_progress, poll: float = 0.3) -> dict:
    """Poll a job until it ends, reporting its progress counters; exit 1 if it did not succeed."""
    while job["status"] in ("queued", "running"):
        time.sleep(poll)
        resp = client.get(f"/v1/jobs/{job['id']}")
        _raise_for_error(resp)
        job = resp.json()
        on_progress(job["progress"])
    if job["status"] != "succeeded":
        console.print(f"[red]job {job['id']} {job['status']}:[/red] {job.get('error')}")
        raise typer.Exit(1)
    return job


def ingest(
    url: str, key: str | None, domain: str, paths: list[Path], metadata: str | None, batch_files: int
) -> None:
    files = list(iter_files(paths))
    if not files:
        console.print("no files to ingest")
        raise typer.Exit(1)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    counts: Counter[str] = Counter()
    errors: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[chunks]} chunks"),
        TimeElapsedColumn(),
    )
    with (
        httpx.Client(base_url=url, headers=headers, timeout=600) as client,
        Progress(*columns, console=console) as bar,
    ):
        task = bar.add_task(f"ingesting into {domain}", total=len(files), chunks=0)
        done_before = 0
        chunks_before = 0
        submitted = 0
        for batch in batches(files, batch_files, 64 * 1024 * 1024):
            submitted += len(batch)
            upload = [("files", (name, f.read_bytes())) for f, name in batch]
            data = {"metadata": metadata} if metadata else {}
            resp = client.post(
                f"/v1/domains/{domain}/documents", files=upload, data=data, params={"wait": "false"}
            )
            _raise_for_error(resp)
            pending = len(files) - submitted

            def show(
                p: dict, pending: int = pending, done: int = done_before, chunks: int = chunks_before
            ) -> None:
                bar.update(
                    task,
                    total=pending + done + p["documents_total"],
                    completed=done + p["documents_done"],
                    chunks=chunks + p["chunks_done"],
                )

            job = follow_job(client, resp.json(), show)
            done_before += job["progress"]["documents_total"]
            chunks_before += job["progress"]["chunks_done"]
            for r in job["results"]:
                counts[r["status"]] += 1
                warnings += [(r["id"], w) for w in r["warnings"]]
            for e in job["errors"]:
                counts["error"] += 1
                errors.append((e["filename"] or e["id"] or "?", e["error"]))
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    console.print(f"[bold]{domain}[/bold]: {summary}; {chunks_before} chunks")
    for doc, w in warnings:
        console.print(f"[yellow]warning[/yellow] {doc}: {w}")
    for name, message in errors:
        console.print(f"[red]failed[/red] {name}: {message}")
    if errors:
        raise typer.Exit(3)


def search(
    url: str, key: str | None, domain: str, query: str, top_k: int, mode: str | None, flt: str | None
) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body: dict = {"query": query, "top_k": top_k}
    if mode is not None:  # unset: the domain's own retrieval mode
        body["mode"] = mode
    if flt:
        try:
            body["filter"] = json.loads(flt)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"--filter is not JSON: {exc.msg}") from exc
    resp = httpx.post(f"{url}/v1/domains/{domain}/search", json=body, headers=headers, timeout=120)
    _raise_for_error(resp)
    out = Console()
    for i, hit in enumerate(resp.json()["data"], start=1):
        where = ", ".join(f"{k} {v}" for k, v in hit["location"].items())
        out.print(
            f"[bold][{i}] {hit['filename'] or hit['document_id']}[/bold] {where}  score {hit['score']:.4f}"
        )
        out.print(hit["text"].strip()[:500], markup=False)
        out.print()


def optimize(url: str, key: str | None, domain: str, spec_path: Path, apply: bool | None) -> None:
    """Send an optimization spec, follow the job with a progress bar, print the score table."""
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {spec_path}: {exc}") from exc
    if apply is not None:
        spec["apply"] = apply
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with (
        httpx.Client(base_url=url, headers=headers, timeout=600) as client,
        Progress(*columns, console=console) as bar,
    ):
        resp = client.post(f"/v1/domains/{domain}/optimize", json=spec)
        _raise_for_error(resp)
        what = "retrieval queries" if "queries" in spec else "templates"
        task = bar.add_task(f"scoring {what} for {domain}", total=None)

        def show(p: dict) -> None:
            bar.update(task, total=p["examples_total"] or None, completed=p["examples_done"])

        job = follow_job(client, resp.json(), show, poll=0.5)
    result = job["optimization"]
    out = Console()
    if result.get("kind") == "retrieval":
        _print_retrieval_tuning(out, result)
        return
    out.print(f"metric {result['metric']}, {result['heldout_size']} held-out examples")
    for s in result["scores"]:
        mark = "*" if s["index"] == result["best"] else " "
        first_line = s["template"].replace("\n", " \\n ")[:70]
        out.print(
            f"{mark} [{s['index']}] {s['score']:.4f} ({s['correct']}/{s['total']})  {first_line}",
            markup=False,
        )
    if result.get("ensemble"):
        e = result["ensemble"]
        out.print(f"  ensemble of {e['templates']}: {e['score']:.4f}")
    if result["applied"]:
        out.print(f"applied template [{result['best']}]: profile version {result['profile_version']}")


def _print_retrieval_tuning(out: Console, result: dict) -> None:
    best = result["best"]
    setting = best["mode"]
    if setting == "hybrid":
        adaptive = ", adaptive" if best["adaptive"] else ""
        setting += f" ({best['method']}, dense_weight {best['dense_weight']}{adaptive})"
    out.print(f"best on {result['selection_size']} selection queries: {setting}, top_k {best['top_k']}")
    for name in ("current", "tuned"):
        h = result[name]["heldout"]
        out.print(
            f"  {name:8s} on {h['queries']} held-out queries: MRR@10 {h['mrr@10']:.4f}  "
            f"hit@1 {h['hit@1']:.3f}  hit@10 {h['hit@10']:.3f}  nDCG@10 {h['ndcg@10']:.4f}"
        )
    if result["applied"]:
        out.print(f"applied: profile version {result['profile_version']}")
    elif result.get("not_applied_because"):
        out.print(f"not applied: {result['not_applied_because']}")
