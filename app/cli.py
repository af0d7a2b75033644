"""The ``tailor`` command: serve, prepare models, show settings."""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path

import typer

from app.config import Settings

cli = typer.Typer(no_args_is_help=True, add_completion=False, help="Tailor: one backbone, many domains.")
models_cli = typer.Typer(no_args_is_help=True, help="Prepare and inspect the bundled models.")
cli.add_typer(models_cli, name="models")


def _settings(**overrides: object) -> Settings:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:
        typer.secho(f"invalid settings: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per replica probe otherwise


@models_cli.command("prepare")
def models_prepare(force: bool = typer.Option(False, help="Convert again even if prepared.")) -> None:
    """Convert the bundled SmolLM2 GGUF to a checkpoint and locate the bundled embedder."""
    from app.checkpoints.prepare import ModelPrepareError, embedder_dir, prepare_backbone

    settings = _settings()
    _logging("warning")
    try:
        if settings.model:
            typer.echo(f"backbone: {settings.model} (configured; nothing to prepare)")
        else:
            prepared = prepare_backbone(settings.data_dir, force=force)
            state = "converted" if prepared.created else "already prepared"
            typer.echo(f"backbone: {prepared.path} ({state})")
        typer.echo(f"embedder: {settings.embedder or embedder_dir()}")
    except ModelPrepareError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from exc


@cli.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (TAILOR_HOST)."),
    port: int | None = typer.Option(None, help="Port (TAILOR_PORT)."),
    context_length: int | None = typer.Option(
        None,
        help="Context window in tokens (TAILOR_ENGINE__CONTEXT_LENGTH); beyond the backbone's "
        "native window YaRN is applied with the factor it needs.",
    ),
) -> None:
    """Start the HTTP server on the configured backbone.

    Exits 1 with a one-line reason when the backbone cannot be served (bad model path, too
    little memory, invalid settings, or transient failures past TAILOR_ENGINE__START_ATTEMPTS),
    so process managers see the failure instead of a server that answers 503 forever.
    """
    import uvicorn

    from app.datadir import DataDirBusy, StateLocks
    from app.main import create_app

    engine = {"context_length": context_length} if context_length is not None else None
    settings = _settings(host=host, port=port, engine=engine)
    if settings.engine.preload_tcmalloc:
        _reexec_with_tcmalloc()
    _logging(settings.log_level)
    problem = settings.bind_problem()
    if problem:
        typer.secho(problem, fg="red", err=True)
        raise typer.Exit(2)
    if warning := settings.open_bind_warning():
        typer.secho(f"tailor: warning: {warning}", fg="yellow", err=True)
    try:  # before anything is written to the data dir (model conversion included)
        data_dir_lock = StateLocks(settings.data_dir, settings.adapters_path).acquire()
    except DataDirBusy as exc:
        typer.secho(f"tailor: cannot start: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    model = _backbone(settings, "tailor: cannot start")
    _check_window(settings, model)

    try:
        sock = _bind(settings.host, settings.port)
    except OSError as exc:
        typer.secho(
            f"tailor: cannot start: cannot bind {settings.host}:{settings.port}: {exc.strerror or exc}",
            fg="red",
            err=True,
        )
        raise typer.Exit(1) from exc

    fatal: list[str] = []

    def stop(reason: str) -> None:
        fatal.append(reason)
        server.should_exit = True

    config = uvicorn.Config(
        create_app(settings, on_fatal=stop, data_dir_lock=data_dir_lock),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if fatal:
        typer.secho(f"tailor: cannot start: {fatal[0]}", fg="red", err=True)
        raise typer.Exit(1)
    if not server.started:
        typer.secho("tailor: the server did not start (see the log above)", fg="red", err=True)
        raise typer.Exit(3)


def _backbone(settings: Settings, context: str) -> str:
    """The backbone's checkpoint dir (the bundled model prepared first if none is configured);
    exits 1 with the reason when it cannot be had."""
    from app.checkpoints.prepare import ModelPrepareError, prepare_backbone, resolve_backbone

    try:
        if not settings.model:
            prepare_backbone(settings.data_dir)
        return resolve_backbone(settings.model, settings.data_dir)
    except ModelPrepareError as exc:
        typer.secho(f"{context}: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc


def _check_window(settings: Settings, model: str) -> None:
    """Refuse a window the backbone cannot be given before anything loads (exit 2, like settings)."""
    from app.window import WindowError, model_config, plan_window

    try:
        plan = plan_window(settings.engine, model_config(model))
    except WindowError as exc:
        typer.secho(f"invalid settings: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    if plan.rope is not None:
        logging.getLogger("tailor").info(
            "window %d tokens: %s RoPE scaling x%.4g over the native %d",
            plan.window,
            plan.rope["rope_type"],
            plan.factor,
            plan.native,
        )


def _reexec_with_tcmalloc() -> None:
    """Run this command again with tcmalloc preloaded, once, if it is installed and not loaded.

    vLLM's engine processes inherit the allocator: under glibc malloc their heap kept growing
    with varied batch shapes (fragmentation), under tcmalloc it levels off at the same speed.
    LD_PRELOAD only works from a process's start, hence the re-exec before anything is loaded.
    """
    import ctypes.util

    if "tcmalloc" in os.environ.get("LD_PRELOAD", "") or sys.platform != "linux":
        return
    lib = ctypes.util.find_library("tcmalloc_minimal")
    if lib is None:
        return
    env = {**os.environ, "LD_PRELOAD": f"{lib} {os.environ.get('LD_PRELOAD', '')}".strip()}
    os.execve(sys.executable, [sys.executable, "-m", "app.cli", *sys.argv[1:]], env)


def _bind(host: str, port: int) -> socket.socket:
    """Bind before anything loads, so a taken port fails in a second, not after the imports."""
    host = "127.0.0.1" if host == "localhost" else host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _server_url(url: str | None) -> str:
    if url:
        return url.rstrip("/")
    s = _settings()
    host = "127.0.0.1" if s.host in ("0.0.0.0", "::") else s.host
    return f"http://{host}:{s.port}"


@cli.command()
def ingest(
    domain: str = typer.Argument(..., help="Domain (collection) to ingest into; created on first use."),
    paths: list[Path] = typer.Argument(..., help="Files or folders (recursed; hidden files skipped)."),
    url: str | None = typer.Option(None, help="Server URL (default: TAILOR_HOST/TAILOR_PORT)."),
    key: str | None = typer.Option(None, envvar="TAILOR_ADMIN_KEY", help="Admin key (TAILOR_ADMIN_KEY)."),
    metadata: str | None = typer.Option(None, help='JSON metadata for every file, e.g. {"case": "C-12"}.'),
    batch_files: int = typer.Option(32, min=1, help="Files per upload request."),
) -> None:
    """Upload documents to a running server, with a progress bar; exit 3 if some files failed."""
    from app.client_cli import ingest as run

    run(_server_url(url), key, domain, paths, metadata, batch_files)


@cli.command()
def search(
    domain: str = typer.Argument(...),
    query: str = typer.Argument(...),
    top_k: int = typer.Option(5, min=1, max=100),
    mode: str | None = typer.Option(None, help="dense, bm25 or hybrid (default: the domain profile's)"),
    filter: str | None = typer.Option(None, "--filter", help='JSON filter, e.g. {"language": "es"}.'),
    url: str | None = typer.Option(None, help="Server URL (default: TAILOR_HOST/TAILOR_PORT)."),
    key: str | None = typer.Option(None, envvar="TAILOR_API_KEY", help="API key (TAILOR_API_KEY)."),
) -> None:
    """Search a domain's documents on a running server."""
    from app.client_cli import search as run

    run(_server_url(url), key, domain, query, top_k, mode, filter)


@cli.command()
def optimize(
    domain: str = typer.Argument(..., help="Domain whose template to choose."),
    spec: Path = typer.Argument(
        ..., help='JSON: {"candidates": [...], "examples": [{"input", "output"}], ...}.'
    ),
    apply: bool | None = typer.Option(
        None, "--apply/--no-apply", help="Store the winner (overrides the spec)."
    ),
    url: str | None = typer.Option(None, help="Server URL (default: TAILOR_HOST/TAILOR_PORT)."),
    key: str | None = typer.Option(None, envvar="TAILOR_ADMIN_KEY", help="Admin key (TAILOR_ADMIN_KEY)."),
) -> None:
    """Score candidate templates on held-out examples on the backbone; optionally apply the best."""
    from app.client_cli import optimize as run

    run(_server_url(url), key, domain, spec, apply)


adapters_cli = typer.Typer(help="LoRA adapters on a running server.", no_args_is_help=True)
cli.add_typer(adapters_cli, name="adapters")
_URL = typer.Option(None, help="Server URL (default: TAILOR_HOST/TAILOR_PORT).")
_ADMIN = typer.Option(None, envvar="TAILOR_ADMIN_KEY", help="Admin key (TAILOR_ADMIN_KEY).")


@adapters_cli.command("list")
def adapters_list(
    url: str | None = _URL, key: str | None = typer.Option(None, envvar="TAILOR_API_KEY")
) -> None:
    """List loaded adapters (and any set aside at start-up)."""
    from app.client_tuning import adapters_list as run

    run(_server_url(url), key)


@adapters_cli.command("load")
def adapters_load(
    name: str = typer.Argument(..., help="Name requests will use as `model`."),
    path: str = typer.Argument(
        ..., help="PEFT LoRA folder: inside the server's adapters dir, or local with --upload."
    ),
    upload: bool = typer.Option(
        False, "--upload", help="Send a local folder instead of naming a server path."
    ),
    url: str | None = _URL,
    key: str | None = _ADMIN,
) -> None:
    """Load a LoRA adapter; it is usable by the next request."""
    from app.client_tuning import adapters_load as run

    run(_server_url(url), key, name, path, upload)


#: Deletes of an adapter or soft prompt a domain profile names are refused unless forced.
_FORCE = typer.Option(False, "--force", help="Detach it from the domain profiles that name it.")


@adapters_cli.command("unload")
def adapters_unload(
    name: str = typer.Argument(...), url: str | None = _URL, key: str | None = _ADMIN, force: bool = _FORCE
) -> None:
    """Unload an adapter (requests already using it finish first)."""
    from app.client_tuning import adapters_unload as run

    run(_server_url(url), key, name, force)


soft_cli = typer.Typer(help="Soft prompts on a running server.", no_args_is_help=True)
cli.add_typer(soft_cli, name="soft-prompts")


@soft_cli.command("list")
def soft_prompts_list(
    url: str | None = _URL, key: str | None = typer.Option(None, envvar="TAILOR_API_KEY")
) -> None:
    """List soft prompts (and any set aside at start-up)."""
    from app.client_soft_prompts import soft_prompts_list as run

    run(_server_url(url), key)


@soft_cli.command("import")
def soft_prompts_import(
    name: str = typer.Argument(..., help="Name requests will use as `model` or `soft_prompt`."),
    folder: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="PEFT prompt-learning adapter folder (safetensors)."
    ),
    url: str | None = _URL,
    key: str | None = _ADMIN,
) -> None:
    """Import a PEFT prompt-tuning, P-tuning or prefix-tuning adapter; usable by the next request."""
    from app.client_soft_prompts import soft_prompts_import as run

    run(_server_url(url), key, name, folder)


@soft_cli.command("delete")
def soft_prompts_delete(
    name: str = typer.Argument(...), url: str | None = _URL, key: str | None = _ADMIN, force: bool = _FORCE
) -> None:
    """Delete a soft prompt (requests already using it finish with it)."""
    from app.client_soft_prompts import soft_prompts_delete as run

    run(_server_url(url), key, name, force)


@cli.command()
def finetune(
    file: Path | None = typer.Argument(
        None,
        exists=True,
        dir_okay=False,
        help="JSONL training file (omit for a soft prompt trained on the domain's documents).",
    ),
    model: str = typer.Option(..., "--model", help="The base model or a domain."),
    method: str = typer.Option(
        "lora", help="lora (or supervised), prompt_tuning, p_tuning or prefix_tuning."
    ),
    validation: Path | None = typer.Option(None, exists=True, dir_okay=False, help="JSONL validation file."),
    suffix: str | None = typer.Option(None, help="Part of the fine-tuned model's name."),
    epochs: int | None = typer.Option(None, min=1, help="n_epochs (default: auto)."),
    rank: int | None = typer.Option(None, min=1, help="LoRA rank (default 8)."),
    virtual_tokens: int | None = typer.Option(None, min=1, help="Soft prompts: virtual tokens (default 20)."),
    init_text: str | None = typer.Option(None, help="prompt_tuning: start from this text."),
    url: str | None = _URL,
    key: str | None = _ADMIN,
) -> None:
    """Upload a training file, train on the server with a progress bar, print the model name."""
    from app.client_tuning import finetune as run

    run(
        _server_url(url),
        key,
        file,
        model,
        method,
        validation,
        suffix,
        epochs,
        rank,
        virtual_tokens=virtual_tokens,
        init_text=init_text,
    )


@cli.command()
def fleet(
    replicas: int = typer.Option(2, min=1, max=64, help="How many vLLM replicas to start."),
    port: int = typer.Option(8001, help="Port of the first replica; the others take the next ones."),
    host: str = typer.Option("127.0.0.1", help="Bind address of the replicas."),
    restart: bool = typer.Option(True, help="Start a replica again when it exits (as Kubernetes would)."),
) -> None:
    """Start a local fleet of `vllm serve` replicas of the backbone, for TAILOR_ENGINE__BACKEND=remote.

    Each replica is vLLM's own OpenAI server with the flags the remote backend needs (runtime LoRA
    loading, prompt embeddings, Tailor's window and adapter limits), on its own cores. Prints the
    TAILOR_ENGINE__SERVERS value once every replica answers /health; a replica that exits is
    started again (--no-restart: left down); Ctrl-C stops them all.
    """
    import contextlib
    import signal
    import subprocess
    import time
    import urllib.request

    from app.engine.vllm_engine import cuda_available
    from app.fleet.launcher import ReplicaSpec, core_sets, start_replica

    settings = _settings()
    model = _backbone(settings, "tailor fleet")
    cores = [None] * replicas if cuda_available() else core_sets(replicas)
    logs = settings.data_dir / "fleet"
    procs = []
    urls = []
    for i in range(replicas):
        spec = ReplicaSpec(port=port + i, cores=cores[i])
        log_file = logs / f"replica-{port + i}.log"
        procs.append(start_replica(settings, model, spec, log_file, host))
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        urls.append(f"http://{shown}:{port + i}")
        typer.echo(f"replica {i + 1}: {urls[-1]} (cores {cores[i] or 'GPU'}, log {log_file})")

    def stop_all(*_: object) -> None:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=20)
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)

    signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(0)))
    try:
        pending = set(range(replicas))
        with typer.progressbar(length=replicas, label="starting replicas") as bar:
            while pending:
                for i in sorted(pending):
                    if procs[i].poll() is not None:
                        raise RuntimeError(f"replica {urls[i]} exited with {procs[i].returncode}; see {logs}")
                    with contextlib.suppress(OSError):
                        with urllib.request.urlopen(urls[i] + "/health", timeout=2) as resp:
                            if resp.status == 200:
                                pending.discard(i)
                                bar.update(1)
                time.sleep(1)
        servers = ",".join(urls)
        typer.echo(
            f"fleet ready. Start Tailor on it:\n  TAILOR_ENGINE__BACKEND=remote TAILOR_ENGINE__SERVERS={servers} make run"
        )
        while True:
            time.sleep(1)
            for i, p in enumerate(procs):
                if p.poll() is None:
                    continue
                with contextlib.suppress(ProcessLookupError):  # its engine processes, if they outlived it
                    os.killpg(p.pid, signal.SIGKILL)
                if not restart:
                    typer.secho(f"replica {urls[i]} exited ({p.returncode})", fg="red", err=True)
                    if all(q.poll() is not None for q in procs):
                        raise typer.Exit(1)
                    continue
                typer.secho(
                    f"replica {urls[i]} exited ({p.returncode}); restarting it", fg="yellow", err=True
                )
                spec = ReplicaSpec(port=port + i, cores=cores[i])
                procs[i] = start_replica(settings, model, spec, logs / f"replica-{port + i}.log", host)
    except RuntimeError as exc:
        typer.secho(f"tailor fleet: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        pass
    finally:
        stop_all()


knowledge_cli = typer.Typer(help="Knowledge stores on this machine's data dir.", no_args_is_help=True)
cli.add_typer(knowledge_cli, name="knowledge")


@knowledge_cli.command("migrate")
def knowledge_migrate(
    to: str = typer.Option(
        ..., "--to", help="Target backend: 'milvus' (from FAISS) or 'faiss' (from Milvus)."
    ),
    domain: list[str] = typer.Option(None, "--domain", help="Only this domain (repeatable); default: all."),
) -> None:
    """Copy knowledge stores to the other backend without re-embedding, then count both sides.

    Milvus is the one the TAILOR_KNOWLEDGE__MILVUS_* settings name; FAISS stores are under the data
    dir. Stop the server on this data dir first. Running it again skips documents already copied.
    Exit 1 if a count differs or a document failed.
    """
    from app.checkpoints.prepare import resolve_embedder
    from app.datadir import DataDirBusy, DataDirLock
    from app.knowledge.migrate import describe, migrate
    from indexers.store.errors import StoreUnavailable

    if to not in ("milvus", "faiss"):
        typer.secho("--to must be 'milvus' or 'faiss'", fg="red", err=True)
        raise typer.Exit(2)
    settings = _settings()
    _logging("warning")
    root = settings.data_dir / "collections"
    source = "faiss" if to == "milvus" else "milvus"
    src, dst = describe(settings.knowledge, source, root), describe(settings.knowledge, to, root)
    typer.echo(f"copying {src['backend']} ({src['where']}) -> {dst['backend']} ({dst['where']})")
    bars: list = []  # one progress bar per domain, the last one current

    def finish() -> None:
        if bars:
            bars[-1].render_finish()

    def on_domain(name: str, total: int) -> None:
        finish()
        bars.append(typer.progressbar(length=max(total, 1), label=f"{name:<20}"))
        bars[-1].render_progress()

    def on_document() -> None:
        bars[-1].update(1)

    try:
        with DataDirLock(settings.data_dir):
            reports = migrate(
                root,
                resolve_embedder(settings.embedder),
                settings.knowledge,
                to,  # type: ignore[arg-type]
                domain or None,
                on_domain,
                on_document,
            )
    except DataDirBusy as exc:
        typer.secho(f"tailor knowledge migrate: {exc}; stop that server first", fg="red", err=True)
        raise typer.Exit(1) from exc
    except StoreUnavailable as exc:
        typer.secho(f"tailor knowledge migrate: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    finally:
        finish()
    failed = False
    for r in reports:
        (sd, sc), (td, tc) = r.source_counts, r.target_counts
        mark = "verified" if r.verified else "MISMATCH"
        typer.echo(
            f"{r.domain}: {r.copied} copied ({r.chunks} chunks), {r.skipped} already there; "
            f"source {sd} documents / {sc} chunks, target {td} / {tc}: {mark}"
        )
        for e in r.errors[:10]:
            typer.secho(f"  {e}", fg="red", err=True)
        failed |= not r.verified
    if not reports:
        typer.echo("no domains to copy")
    raise typer.Exit(1 if failed else 0)


@cli.command("settings")
def show_settings() -> None:
    """List every setting with its environment variable, default and description."""
    from app.settings_doc import settings_table

    typer.echo(settings_table())


def main() -> None:
    cli(prog_name="tailor")


if __name__ == "__main__":
    sys.exit(main())
