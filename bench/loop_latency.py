"""Is the event loop free while a large ingest runs? ``/health`` latency, idle and during ingest.

A server is started from ``--cwd`` (a checkout: run it once on the current tree and once on an
older commit to compare), a large batch of documents is ingested as a job, and meanwhile one
client polls ``/health`` at 20 Hz while another does what a dashboard does: polls the job, lists
the documents and reads one. Any blocking work on the event loop shows up as ``/health`` latency.

    python bench/loop_latency.py --cwd . --out bench/results/loop_after.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.server import ROOT, ServerProcess


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(1000 * values[min(len(values) - 1, int(q * len(values)))], 1)


def summary(latencies: list[float]) -> dict:
    return {
        "n": len(latencies),
        "p50_ms": _pct(latencies, 0.5),
        "p99_ms": _pct(latencies, 0.99),
        "max_ms": round(1000 * max(latencies), 1),
        "mean_ms": round(1000 * statistics.fmean(latencies), 1),
    }


def poll_health(url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            client.get("/health")
            out.append(time.perf_counter() - t0)
            time.sleep(0.05)


def documents(n: int) -> list[dict]:
    words = "statute clause tenant landlord notice payment arrears court appeal filing".split()
    return [
        {
            "id": f"memo-{i:05d}.txt",
            "text": "\n\n".join(
                f"Memo {i}, paragraph {p}: "
                + " ".join(words[(i * 7 + p + k) % len(words)] for k in range(150))
                for p in range(3)
            ),
        }
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cwd", type=Path, default=ROOT)
    parser.add_argument("--docs", type=int, default=1500)
    parser.add_argument("--model", default=str(ROOT / "data" / "models" / "SmolLM2-135M-Instruct"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "loop_latency.json")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="tailor-loop-"))
    server = ServerProcess(
        data / "server.log", cwd=args.cwd, TAILOR_MODEL=args.model, TAILOR_DATA_DIR=str(data)
    )
    try:
        server.wait_ready()
        idle: list[float] = []
        stop = threading.Event()
        poller = threading.Thread(target=poll_health, args=(server.url, stop, idle))
        poller.start()
        time.sleep(10)
        stop.set()
        poller.join()

        busy: list[float] = []
        dashboard: list[float] = []
        stop = threading.Event()
        poller = threading.Thread(target=poll_health, args=(server.url, stop, busy))
        with httpx.Client(base_url=server.url, timeout=600) as client:
            resp = client.post(
                "/v1/domains/bulk/documents", json={"documents": documents(args.docs)}, params={"wait": False}
            )
            resp.raise_for_status()
            job_id = resp.json()["id"]
            poller.start()
            t_ingest = time.monotonic()
            while True:
                t0 = time.perf_counter()
                job = client.get(f"/v1/jobs/{job_id}").json()
                if job["progress"]["documents_done"]:
                    client.get("/v1/domains/bulk/documents", params={"limit": 20})
                    client.get("/v1/domains/bulk/documents/memo-00000.txt")
                dashboard.append(time.perf_counter() - t0)
                if job["status"] not in ("queued", "running"):
                    break
                time.sleep(0.2)
            ingest_s = time.monotonic() - t_ingest
        stop.set()
        poller.join()
        result = {
            "checkout": str(args.cwd),
            "documents": args.docs,
            "job_status": job["status"],
            "ingest_seconds": round(ingest_s, 1),
            "health_idle": summary(idle),
            "health_during_ingest": summary(busy),
            "dashboard_round_during_ingest": summary(dashboard),
        }
    finally:
        server.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
