"""What the OpenAI-ecosystem features cost and buy, against plain requests in the same server.

``generation``  8 concurrent clients × 6 chat requests to the backbone, 64 output tokens each,
                through the official openai client: plain; ``logprobs`` with 5 alternatives;
                ``response_format`` ``json_schema``; a forced (named) tool call. Output tokens/s
                and mean latency, with the ratio to plain. Constrained answers may stop before 64
                tokens, so tokens/s is the comparable figure.
``validity``    40 extraction prompts ("<name> is <age> years old and works as a <job>."), with
                the JSON form spelled out in the prompt and without it, each unconstrained and
                with ``json_schema``: answers that parse, that match the schema (keys and types),
                and that carry the right values (case-insensitive).
``embeddings``  2,048 sentences through ``/v1/embeddings`` (openai client, base64, batches of
                256) vs the same embedder in-process (sentence-transformers, batch 64):
                sentences/s and the ratio (the HTTP path's overhead).

One cold ``tailor serve`` for all three. Run: ``make bench-ecosystem``; results in
docs/results/ecosystem.json and docs/benchmarks.md ("Ecosystem").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT = ROOT / "docs" / "results" / "ecosystem.json"
LOGS = ROOT / "bench" / "results"
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "job": {"type": "string"}},
    "required": ["name", "age", "job"],
    "additionalProperties": False,
}
TOOL = {
    "type": "function",
    "function": {"name": "record_person", "description": "Store a person.", "parameters": PERSON},
}
NAMES = ["Ann", "Bruno", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jun"]
JOBS = ["nurse", "lawyer", "pilot", "baker", "teacher", "plumber", "chemist", "judge"]
TOPICS = ["rent", "notice", "deposit", "repairs", "insurance", "taxes", "pets", "parking"]


def _people(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"name": rng.choice(NAMES), "age": rng.randint(20, 80), "job": rng.choice(JOBS)} for _ in range(n)
    ]


async def _timed(calls: list, concurrency: int) -> tuple[float, list[Any], list[float]]:
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(call):
        async with sem:
            t0 = time.perf_counter()
            r = await call()
            latencies.append(time.perf_counter() - t0)
            return r

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(c) for c in calls))
    return time.perf_counter() - t0, results, latencies


async def generation(url: str, model: str, clients: int = 8, per_client: int = 6) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=600)
    people = _people(clients * per_client, seed=1)
    ask = [f"Describe {p['name']}, a {p['age']}-year-old {p['job']}, in a few sentences." for p in people]
    modes = {
        "plain": {"extra_body": {"ignore_eos": True}},
        "logprobs (top 5)": {"logprobs": True, "top_logprobs": 5, "extra_body": {"ignore_eos": True}},
        "json_schema": {
            "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
        },
        "named tool call": {
            "tools": [TOOL],
            "tool_choice": {"type": "function", "function": {"name": "record_person"}},
        },
    }
    rows = {}
    await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    for label, extra in modes.items():
        calls = [
            (
                lambda q=q, extra=extra: client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": q}],
                    max_tokens=64,
                    temperature=0,
                    **extra,
                )
            )
            for q in ask
        ]
        wall, results, latencies = await _timed(calls, clients)
        tokens = sum(r.usage.completion_tokens for r in results)
        rows[label] = {
            "requests": len(results),
            "output_tokens": tokens,
            "wall_s": round(wall, 2),
            "tokens_per_s": round(tokens / wall, 1),
            "mean_latency_s": round(statistics.mean(latencies), 2),
        }
        print(label, rows[label], flush=True)
    base = rows["plain"]["tokens_per_s"]
    for row in rows.values():
        row["tokens_per_s_vs_plain"] = round(row["tokens_per_s"] / base, 3)
    return {"clients": clients, "requests_per_client": per_client, "max_tokens": 64, "rows": rows}


def _check(text: str, want: dict) -> dict[str, bool]:
    """Parses, matches the schema (keys and types), and which values are right (case-insensitive)."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        data = None
    typed = (
        isinstance(data, dict)
        and set(data) == {"name", "age", "job"}
        and isinstance(data["name"], str)
        and isinstance(data["age"], int)
        and isinstance(data["job"], str)
    )
    return {
        "parses": data is not None,
        "matches_schema": typed,
        "name_right": typed and data["name"].strip().lower() == want["name"].lower(),
        "age_right": typed and data["age"] == want["age"],
        "job_right": typed and data["job"].strip().lower() == want["job"],
    }


async def validity(url: str, model: str, n: int = 40) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=600)
    people = _people(n, seed=2)
    schema = {"response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}}
    hint = ' Answer only with JSON of the form {"name": string, "age": integer, "job": string}.'
    rows = {}
    for label, extra, suffix in (
        ("format in the prompt, unconstrained", {}, hint),
        ("format in the prompt, json_schema", schema, hint),
        ("no format in the prompt, unconstrained", {}, " Extract the person's name, age and job."),
        ("no format in the prompt, json_schema", schema, " Extract the person's name, age and job."),
    ):
        calls = [
            (
                lambda p=p, extra=extra, suffix=suffix: client.chat.completions.create(
                    model=model,
                    messages=[
                        {
                            "role": "user",
                            "content": f"{p['name']} is {p['age']} years old and works as a {p['job']}.{suffix}",
                        }
                    ],
                    max_tokens=60,
                    temperature=0,
                    **extra,
                )
            )
            for p in people
        ]
        _, results, _ = await _timed(calls, 8)
        checks = [_check(r.choices[0].message.content, p) for r, p in zip(results, people, strict=True)]
        rows[label] = {
            **{k: sum(c[k] for c in checks) for k in checks[0]},
            "all_right": sum(c["name_right"] and c["age_right"] and c["job_right"] for c in checks),
            "of": n,
            "samples": [r.choices[0].message.content for r in results[:2]],
        }
        print(label, {k: v for k, v in rows[label].items() if k != "samples"}, flush=True)
    return {"rows": rows}


def embeddings(url: str, n: int = 2048) -> dict:
    import openai

    from indexers.embedding import SentenceTransformerEmbedder, bundled_embedder_dir

    rng = random.Random(3)
    texts = [
        f"Clause {i}: the {rng.choice(JOBS)} shall handle {rng.choice(TOPICS)} within {rng.randint(2, 90)} days."
        for i in range(n)
    ]
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=600)
    name = next(m.id for m in client.models.list().data if getattr(m, "kind", None) == "embedding")
    client.embeddings.create(model=name, input=texts[:8])
    t0 = time.perf_counter()
    for start in range(0, n, 256):
        client.embeddings.create(model=name, input=texts[start : start + 256])
    http_s = time.perf_counter() - t0
    local = SentenceTransformerEmbedder(str(bundled_embedder_dir()))
    local.embed(texts[:8])
    t0 = time.perf_counter()
    local.embed(texts)
    local_s = time.perf_counter() - t0
    row = {
        "sentences": n,
        "http_s": round(http_s, 2),
        "http_per_s": round(n / http_s, 1),
        "in_process_s": round(local_s, 2),
        "in_process_per_s": round(n / local_s, 1),
        "http_vs_in_process": round(local_s / http_s, 3),
    }
    print("embeddings", row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("parts", nargs="*", default=["generation", "validity", "embeddings"])
    args = parser.parse_args()
    from bench.server import ServerProcess

    server = ServerProcess(LOGS / "ecosystem-server.log", TAILOR_DATA_DIR=str(ROOT / "data"))
    results: dict[str, Any] = json.loads(OUT.read_text()) if OUT.exists() else {}
    try:
        results["server_ready_s"] = round(server.wait_ready(900), 1)
        import httpx

        model = httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"]
        if "generation" in args.parts:
            results["generation"] = asyncio.run(generation(server.url, model))
        if "validity" in args.parts:
            results["validity"] = asyncio.run(validity(server.url, model))
        if "embeddings" in args.parts:
            results["embeddings"] = embeddings(server.url)
    finally:
        server.stop()
    if "validity" in args.parts:
        # the same prompts with the schema also shown to the model (TAILOR_SCHEMA_IN_PROMPT=true)
        noted = ServerProcess(
            LOGS / "ecosystem-server-note.log",
            TAILOR_DATA_DIR=str(ROOT / "data"),
            TAILOR_SCHEMA_IN_PROMPT="true",
        )
        try:
            noted.wait_ready(900)
            results["validity_with_schema_note"] = asyncio.run(validity(noted.url, model))
        finally:
            noted.stop()
    results["machine"] = f"{os.cpu_count()} CPU cores"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
