"""Soak and faults against a real, cold server.

``soak``: mixed traffic for ``--minutes`` at ``--clients`` concurrent clients — chat to a domain
with RAG (official ``openai`` client), streamed completions, search, small ingests, profile edits
and reads — then checks that nothing acknowledged was lost (every document acknowledged with 201
can be read back, every profile edit acknowledged is the stored version). Records latency per
kind, every status, and the server's memory and open files every 10 s.

``kill``: kill -9 of the whole server in the middle of a large ingest, then a restart: the job
must read ``interrupted``, the store must be consistent, and re-submitting must complete it.

``disk-full``: the data dir on a small tmpfs (needs root) filled by ingests: the error must be
clear, the store consistent and usable, and ingestion must work again once there is space.

    python -m bench.soak soak --minutes 10 --clients 24
    python -m bench.soak kill
    python -m bench.soak disk-full
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import openai

from bench.server import ROOT, ServerProcess

MODEL = str(ROOT / "data" / "models" / "SmolLM2-135M-Instruct")
OUT = ROOT / "bench" / "results"
WORDS = (
    "statute clause tenant landlord notice payment arrears court appeal filing deposit lease "
    "termination damages liability warranty breach remedy arbitration jurisdiction"
).split()


def text(seed: int, words: int = 120) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words))


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(1000 * values[min(len(values) - 1, int(q * len(values)))], 1)


def start(data: Path, name: str, **env: str) -> ServerProcess:
    server = ServerProcess(
        data / f"{name}.log",
        TAILOR_MODEL=MODEL,
        TAILOR_DATA_DIR=str(data),
        TAILOR_ENGINE__MAX_MODEL_LEN="2048",
        TAILOR_ENGINE__KV_CACHE_SPACE_GIB="2",
        TAILOR_LOG_LEVEL="warning",
        **env,
    )
    server.wait_ready()
    return server


# -- soak ---------------------------------------------------------------------------------------


class Soak:
    def __init__(self, server: ServerProcess, clients: int, seconds: float) -> None:
        self.server = server
        self.clients = clients
        self.deadline = time.monotonic() + seconds
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.transport_errors: Counter[str] = Counter()
        self.acked_docs: list[tuple[str, str]] = []
        self.acked_profiles: dict[str, tuple[int, str]] = {}
        self.samples: list[dict] = []

    async def timed(self, kind: str, coro) -> None:
        t0 = time.perf_counter()
        try:
            status = await coro
        except (httpx.TransportError, openai.APIConnectionError) as exc:
            self.transport_errors[f"{kind}: {type(exc).__name__}"] += 1
            return
        except openai.APIStatusError as exc:
            status = exc.status_code
        self.latency[kind].append(time.perf_counter() - t0)
        self.statuses[(kind, status)] += 1

    async def chat(self, oai: openai.AsyncOpenAI, rng: random.Random) -> int:
        q = f"What does the {rng.choice(WORDS)} clause say about {rng.choice(WORDS)}?"
        reply = await oai.chat.completions.create(
            model="soak-law", messages=[{"role": "user", "content": q}], max_tokens=16
        )
        assert reply.model_extra.get("sources") is not None
        return 200

    async def stream(self, oai: openai.AsyncOpenAI, base: str, rng: random.Random) -> int:
        stream = await oai.completions.create(
            model=base, prompt=f"The {rng.choice(WORDS)} means", max_tokens=16, stream=True
        )
        async for _ in stream:
            pass
        return 200

    async def search(self, http: httpx.AsyncClient, rng: random.Random) -> int:
        body = {
            "query": f"{rng.choice(WORDS)} {rng.choice(WORDS)}",
            "mode": rng.choice(["dense", "bm25", "hybrid"]),
        }
        return (await http.post("/v1/domains/soak-law/search", json=body)).status_code

    async def ingest(self, http: httpx.AsyncClient, client: int, n: int) -> int:
        doc_id = f"c{client}-doc{n}"
        body = {"documents": [{"id": doc_id, "text": text(client * 100_000 + n)}]}
        resp = await http.post("/v1/domains/soak-law/documents", json=body)
        if resp.status_code == 201:
            self.acked_docs.append(("soak-law", doc_id))
        return resp.status_code

    async def edit(self, http: httpx.AsyncClient, client: int, n: int) -> int:
        name = f"soak-c{client}"
        prompt = f"You answer for client {client}, edit {n}."
        body = {"system_prompt": prompt, "template": "Context:\n{context}\n\nQ: {question}"}
        resp = await http.put(f"/v1/domains/{name}", json=body)
        if resp.status_code in (200, 201):
            self.acked_profiles[name] = (resp.json()["version"], prompt)
        return resp.status_code

    async def read(self, http: httpx.AsyncClient, rng: random.Random) -> int:
        path = rng.choice(["/v1/domains", "/v1/domains/soak-law/documents", "/v1/models"])
        return (await http.get(path)).status_code

    async def client(self, i: int, base: str) -> None:
        rng = random.Random(i)
        oai = openai.AsyncOpenAI(base_url=f"{self.server.url}/v1", api_key="x", max_retries=0, timeout=300)
        async with httpx.AsyncClient(base_url=self.server.url, timeout=300) as http:
            n = 0
            while time.monotonic() < self.deadline:
                n += 1
                roll = rng.random()
                if roll < 0.30:
                    await self.timed("chat_rag", self.chat(oai, rng))
                elif roll < 0.55:
                    await self.timed("completion_stream", self.stream(oai, base, rng))
                elif roll < 0.75:
                    await self.timed("search", self.search(http, rng))
                elif roll < 0.85:
                    await self.timed("ingest", self.ingest(http, i, n))
                elif roll < 0.92:
                    await self.timed("profile_edit", self.edit(http, i, n))
                else:
                    await self.timed("read", self.read(http, rng))
        await oai.close()

    async def sampler(self) -> None:
        t0 = time.monotonic()
        while time.monotonic() < self.deadline:
            self.samples.append({"t": round(time.monotonic() - t0), **self.server.usage()})
            await asyncio.sleep(10)
        self.samples.append({"t": round(time.monotonic() - t0), **self.server.usage()})

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.server.url, timeout=300) as http:
            base = (await http.get("/v1/models")).json()["data"][0]["id"]
            await http.put(
                "/v1/domains/soak-law", json={"system_prompt": "You are a careful legal assistant."}
            )
            seed = [{"id": f"seed-{k}", "text": text(k, 200)} for k in range(40)]
            (
                await http.post(
                    "/v1/domains/soak-law/documents", json={"documents": seed}, params={"wait": True}
                )
            ).raise_for_status()
        await asyncio.gather(self.sampler(), *(self.client(i, base) for i in range(self.clients)))

    async def verify(self) -> dict:
        lost_docs, lost_edits = [], []
        async with httpx.AsyncClient(base_url=self.server.url, timeout=60) as http:
            for domain, doc_id in self.acked_docs:
                if (await http.get(f"/v1/domains/{domain}/documents/{doc_id}")).status_code != 200:
                    lost_docs.append(doc_id)
            for name, (version, prompt) in self.acked_profiles.items():
                stored = (await http.get(f"/v1/domains/{name}")).json()
                if stored.get("version") != version or stored.get("system_prompt") != prompt:
                    lost_edits.append(name)
        return {
            "acknowledged_documents": len(self.acked_docs),
            "lost_documents": lost_docs,
            "acknowledged_profiles": len(self.acked_profiles),
            "lost_profile_edits": lost_edits,
        }

    def report(self, seconds: float) -> dict:
        kinds = sorted(self.latency)
        return {
            "clients": self.clients,
            "seconds": round(seconds),
            "requests": sum(self.statuses.values()),
            "server_errors_5xx": sum(n for (_, s), n in self.statuses.items() if s >= 500),
            "transport_errors": dict(self.transport_errors),
            "statuses": {f"{k} {s}": n for (k, s), n in sorted(self.statuses.items())},
            "latency_ms": {
                k: {
                    "n": len(self.latency[k]),
                    "p50": pct(self.latency[k], 0.5),
                    "p99": pct(self.latency[k], 0.99),
                }
                for k in kinds
            },
            "usage_over_time": self.samples,
        }


def soak(args: argparse.Namespace) -> dict:
    data = Path(tempfile.mkdtemp(prefix="tailor-soak-"))
    server = start(data, "soak")
    try:
        run = Soak(server, args.clients, args.minutes * 60)
        t0 = time.monotonic()
        asyncio.run(run.run())
        result = run.report(time.monotonic() - t0)
        result["verification"] = asyncio.run(run.verify())
    finally:
        result_code = server.stop()
    result["server_exit"] = result_code
    return result


# -- faults -------------------------------------------------------------------------------------


def bulk(n: int, offset: int = 0) -> list[dict]:
    return [
        {"id": f"bulk-{i:05d}", "text": "\n\n".join(text(i * 10 + p) for p in range(3))}
        for i in range(offset, offset + n)
    ]


def consistency(http: httpx.Client, domain: str) -> dict:
    listed = http.get(f"/v1/domains/{domain}/documents", params={"limit": 500}).json()
    stats = http.get(f"/v1/domains/{domain}").json()["knowledge"]
    hits = http.post(
        f"/v1/domains/{domain}/search", json={"query": "tenant deposit", "mode": "dense"}
    ).json()["data"]
    return {
        "documents": listed["total"],
        "chunks": stats["chunks"],
        "every_listed_document_has_chunks": all(d["chunk_count"] > 0 for d in listed["data"]),
        "dense_search_hits": len(hits),
    }


def fault_kill(args: argparse.Namespace) -> dict:
    data = Path(tempfile.mkdtemp(prefix="tailor-kill-"))
    docs = bulk(args.docs)
    first = start(data, "first")
    with httpx.Client(base_url=first.url, timeout=300) as http:
        job_id = http.post(
            "/v1/domains/bulk/documents", json={"documents": docs}, params={"wait": False}
        ).json()["id"]
        while (job := http.get(f"/v1/jobs/{job_id}").json())["progress"]["documents_done"] < args.docs // 4:
            time.sleep(0.1)
    first.crash()
    result: dict = {"documents": args.docs, "done_when_killed": job["progress"]["documents_done"]}
    second = start(data, "second")
    try:
        with httpx.Client(base_url=second.url, timeout=900) as http:
            job = http.get(f"/v1/jobs/{job_id}").json()
            result["job_after_restart"] = {"status": job["status"], "error": job["error"]}
            result["after_restart"] = consistency(http, "bulk")
            resp = http.post("/v1/domains/bulk/documents", json={"documents": docs}, params={"wait": True})
            statuses = Counter(r["status"] for r in resp.json()["results"])
            result["resubmit"] = {"status": resp.status_code, "results": dict(statuses)}
            result["after_resubmit"] = consistency(http, "bulk")
    finally:
        second.stop()
    return result


def fault_disk_full(args: argparse.Namespace) -> dict:
    mount = Path(tempfile.mkdtemp(prefix="tailor-tmpfs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.tmpfs_mib}m", "tmpfs", str(mount)], check=True)
    result: dict = {"tmpfs_mib": args.tmpfs_mib, "batches": []}
    server = None
    try:
        server = start(mount, "server")
        with httpx.Client(base_url=server.url, timeout=600) as http:
            acked = 0
            for b in range(200):
                resp = http.post(
                    "/v1/domains/full/documents", json={"documents": bulk(50, b * 50)}, params={"wait": True}
                )
                body = resp.json()
                errors = body.get("errors") or []
                result["batches"].append({"status": resp.status_code, "errors": len(errors)})
                if resp.status_code == 201 and not errors:
                    acked += len(body["results"])
                    continue
                result["failure"] = {
                    "status": resp.status_code,
                    "message": (body.get("error") or {}).get("message")
                    or (errors[0]["error"] if errors else None),
                    "created_in_failed_batch": sum(r["status"] == "created" for r in body.get("results", [])),
                }
                acked += result["failure"]["created_in_failed_batch"]
                break
            result["acknowledged"] = acked
            result["when_full"] = consistency(http, "full")
            result["health_when_full"] = http.get("/health").json()
            subprocess.run(["mount", "-o", f"remount,size={args.tmpfs_mib * 4}m", str(mount)], check=True)
            resp = http.post(
                "/v1/domains/full/documents",
                json={"documents": bulk(50, len(result["batches"]) * 50 - 50)},
                params={"wait": True},
            )
            result["after_space_returns"] = {
                "status": resp.status_code,
                "errors": len(resp.json().get("errors", [])),
            }
            result["final"] = consistency(http, "full")
        server.stop()
        server = start(mount, "restarted")
        with httpx.Client(base_url=server.url, timeout=60) as http:
            result["after_restart"] = consistency(http, "full")
    finally:
        if server is not None:
            server.stop()
        subprocess.run(["umount", str(mount)], check=False)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["soak", "kill", "disk-full"])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--docs", type=int, default=800)
    parser.add_argument("--tmpfs-mib", type=int, default=24)
    args = parser.parse_args()
    run = {"soak": soak, "kill": fault_kill, "disk-full": fault_disk_full}[args.what]
    result = run(args)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"soak-{args.what}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "usage_over_time"}, indent=2))


if __name__ == "__main__":
    main()
