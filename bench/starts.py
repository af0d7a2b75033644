"""Cold start-ups, counted: start the server as a user does, N times in a row, and record each.

Each run launches the command (default ``make run``) in a fresh process group on a free port,
polls ``/health`` until it says ``ready`` (or the process exits, or the time runs out), sends one
chat request with the official ``openai`` client, then stops the server with SIGINT. With
``--busy K`` every other run starts K CPU-bound processes beside the server first: start-up
races show up when the machine is busy.

    python -m bench.starts --runs 20 --busy 2 --cwd /tmp/fresh-clone --out starts.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import httpx

from bench.server import ServerProcess


def _burn() -> None:
    while True:
        pass


def _ask(url: str) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    model = client.models.list().data[0].id
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=12
    )
    return reply.choices[0].message.content or ""


def one_start(command: str, cwd: Path, busy: int, timeout: float, log: Path) -> dict:
    burners = [mp.Process(target=_burn, daemon=True) for _ in range(busy)]
    for b in burners:
        b.start()
    t0 = time.monotonic()
    server = ServerProcess(log, cwd=cwd, command=command)
    result: dict = {"busy": busy, "port": server.port, "outcome": "timeout", "health": None}
    try:
        while time.monotonic() - t0 < timeout:
            if server.proc.poll() is not None:
                result["outcome"] = "exited"
                break
            try:
                resp = httpx.get(f"{server.url}/health", timeout=2)
                result["health"] = resp.json().get("status")
                if resp.status_code == 200:
                    result["outcome"] = "ready"
                    result["answer"] = _ask(server.url)
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        result["seconds"] = round(time.monotonic() - t0, 1)
    finally:
        for b in burners:
            b.kill()
        result["exit_code"] = server.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--busy", type=int, default=2, help="CPU-bound processes beside every other run")
    parser.add_argument("--command", default="make run")
    parser.add_argument("--cwd", type=Path, default=Path.cwd())
    parser.add_argument("--timeout", type=float, default=600, help="seconds one start may take")
    parser.add_argument("--out", type=Path, default=Path("bench/results/starts.json"))
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    runs = []
    for i in range(args.runs):
        busy = args.busy if i % 2 else 0
        r = one_start(args.command, args.cwd, busy, args.timeout, args.out.with_suffix(f".{i}.log"))
        runs.append(r)
        print(
            f"start {i + 1:2d}/{args.runs}  busy={busy}  {r['outcome']:7s}  {r['seconds']:6.1f} s  "
            f"exit={r['exit_code']}  health={r['health']}  answer={r.get('answer', '')!r}",
            flush=True,
        )
        args.out.write_text(json.dumps({"command": args.command, "runs": runs}, indent=2))
    ready = sum(r["outcome"] == "ready" for r in runs)
    print(f"{ready}/{len(runs)} starts reached ready")


if __name__ == "__main__":
    main()
