"""Serving overhead: Tailor's HTTP API vs the bare vLLM engine vs transformers ``generate``.

The same chat prompts (greedy, exactly ``--max-tokens`` new tokens each) at several concurrency
levels through
  (a) Tailor over HTTP (a ``tailor serve`` subprocess, streamed chat completions via httpx),
  (b) vLLM's AsyncLLM in this process with identical engine arguments and token ids,
  (c) Hugging Face transformers ``generate`` (static batches of ``concurrency`` prompts).
Reports output tokens/s, time to first token and end-to-end latency p50/p99, and the ratios a/b
and a/c. Run: ``.venv/bin/python bench/serve.py`` (``make bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUESTIONS = [
    "What is the capital of France?",
    "Explain what a contract's force majeure clause is.",
    "List three symptoms of dehydration.",
    "What does a central bank do?",
    "How does a mobile network hand over a call between cells?",
    "Summarize the water cycle in two sentences.",
    "What is the difference between a stock and a bond?",
    "Give a short definition of negligence in tort law.",
    "Why do we need vaccines?",
    "Describe how interest rates affect inflation.",
    "What is 5G?",
    "Write a haiku about the sea.",
    "What is photosynthesis?",
    "Explain recursion to a child.",
    "What are the three branches of government?",
    "How do I keep a houseplant alive?",
]


@dataclass
class Run:
    mode: str
    concurrency: int
    requests: int
    output_tokens: int
    wall_s: float
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)

    @property
    def tok_per_s(self) -> float:
        return self.output_tokens / self.wall_s

    def pct(self, values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]

    def summary(self) -> dict:
        return {
            "mode": self.mode,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "output_tokens": self.output_tokens,
            "wall_s": round(self.wall_s, 2),
            "tok_per_s": round(self.tok_per_s, 1),
            "latency_p50_s": round(self.pct(self.latencies, 50), 3),
            "latency_p99_s": round(self.pct(self.latencies, 99), 3),
            "ttft_p50_s": round(self.pct(self.ttfts, 50), 3),
            "ttft_p99_s": round(self.pct(self.ttfts, 99), 3),
        }


def prompts_for(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}] for i in range(n)]


def n_requests(concurrency: int, minimum: int) -> int:
    return max(minimum, 2 * concurrency)


# -- targets: (b) the bare engine in-process, (a) Tailor over HTTP, bare vLLM over HTTP ------------
class EngineTarget:
    """vLLM's AsyncLLM in this process, with exactly the engine arguments Tailor uses."""

    mode = "engine"

    def __init__(self, settings, model: str, max_tokens: int) -> None:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.async_llm import AsyncLLM

        from app.engine.vllm_engine import VLLMEngine, _apply_environment, cuda_available

        _apply_environment(settings.engine, cuda_available())
        self.llm = AsyncLLM.from_engine_args(
            VLLMEngine(settings.engine, model)._engine_args(cuda_available())
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.params = SamplingParams(
            max_tokens=max_tokens, temperature=0, ignore_eos=True, output_kind=RequestOutputKind.DELTA
        )
        self.count = 0

    async def request(self, messages: list[dict]) -> tuple[float, float, int]:
        from prompts import render_chat

        ids = render_chat(self.tokenizer, messages).token_ids
        self.count += 1
        t0 = time.perf_counter()
        first, tokens = 0.0, 0
        async for out in self.llm.generate({"prompt_token_ids": ids}, self.params, f"b{self.count}"):
            if not first and out.outputs and out.outputs[0].text:
                first = time.perf_counter()
            tokens += len(out.outputs[0].token_ids) if out.outputs else 0
        return t0, first, tokens

    def close(self) -> None:
        self.llm.shutdown()


class HTTPTarget:
    """An OpenAI-compatible server in a subprocess, driven with streamed chat completions."""

    def __init__(
        self, mode: str, port: int, name: str, max_tokens: int, env: dict, cmd: list[str] | None = None
    ):
        import httpx

        self.mode = mode
        self.name = name
        self.max_tokens = max_tokens
        self.proc = start_server(port, env, cmd)
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        self.client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600, limits=limits)

    async def request(self, messages: list[dict]) -> tuple[float, float, int]:
        t0 = time.perf_counter()
        first, tokens = await chat_once(self.client, self.name, messages, self.max_tokens)
        return t0, first, tokens

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


async def run_level(target, concurrency: int, chats: list[list[dict]], run: Run) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(messages: list[dict]) -> None:
        async with sem:
            t0, first, tokens = await target.request(messages)
            run.latencies.append(time.perf_counter() - t0)
            run.ttfts.append(first - t0 if first else 0.0)
            run.output_tokens += tokens

    t = time.perf_counter()
    await asyncio.gather(*(one(m) for m in chats))
    run.wall_s += time.perf_counter() - t
    run.requests += len(chats)


async def bench_interleaved(targets: list, levels: list[int], minimum: int, rounds: int) -> list[Run]:
    """Alternate the targets round by round so drift on a shared 2-core machine hits all alike."""
    for target in targets:  # warm-up
        await target.request(prompts_for(1)[0])
    runs = []
    for c in levels:
        chats = prompts_for(n_requests(c, minimum))
        level = {t.mode: Run(t.mode, c, 0, 0, 0.0) for t in targets}
        for r in range(rounds):
            order = targets[r % len(targets) :] + targets[: r % len(targets)]
            for target in order:
                await run_level(target, c, chats, level[target.mode])
        for run in level.values():
            print(json.dumps(run.summary()), flush=True)
        runs += level.values()
    return runs


async def chat_once(client, model_name: str, messages: list[dict], max_tokens: int) -> tuple[float, int]:
    body = {
        "model": model_name,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    first = 0.0
    tokens = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"])
            if event["choices"] and event["choices"][0]["delta"].get("content") and not first:
                first = time.perf_counter()
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    if tokens != max_tokens:
        raise RuntimeError(f"expected {max_tokens} tokens, got {tokens}")
    return first, tokens


def vllm_server_command(settings, model: str, name: str, port: int) -> list[str]:
    """Bare vLLM OpenAI server with the engine arguments Tailor uses (a reference for HTTP cost)."""
    from app.engine.vllm_engine import VLLMEngine, cuda_available

    a = VLLMEngine(settings.engine, model)._engine_args(cuda_available())
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
    cmd += ["--served-model-name", name, "--port", str(port), "--dtype", a.dtype]
    cmd += ["--max-num-seqs", str(a.max_num_seqs), "--seed", str(a.seed), "--disable-log-stats"]
    cmd += ["--enable-prompt-embeds", "--enable-lora", "--max-loras", str(a.max_loras)]
    cmd += ["--max-lora-rank", str(a.max_lora_rank)]
    if a.enforce_eager:
        cmd.append("--enforce-eager")
    if a.max_model_len:
        cmd += ["--max-model-len", str(a.max_model_len)]
    return cmd


def start_server(port: int, env: dict[str, str], cmd: list[str] | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(
        cmd or [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[2] if cmd else 'tailor serve'} exited during start-up")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise TimeoutError("server did not become ready")


# -- (c) transformers -----------------------------------------------------------------------------
def bench_transformers(model: str, levels: list[int], max_tokens: int, minimum: int, dtype: str) -> list[Run]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prompts import render_chat

    tok = AutoTokenizer.from_pretrained(model)
    tok.padding_side = "left"
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).eval()
    runs = []
    for c in levels:
        chats = prompts_for(n_requests(c, minimum))
        ids = [render_chat(tok, m).token_ids for m in chats]
        run = Run("transformers", c, len(ids), 0, 0.0)
        t = time.perf_counter()
        for start in range(0, len(ids), c):
            batch = ids[start : start + c]
            width = max(len(x) for x in batch)
            input_ids = torch.tensor([[tok.pad_token_id] * (width - len(x)) + x for x in batch])
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch])
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = hf.generate(
                    input_ids=input_ids,
                    attention_mask=mask,
                    max_new_tokens=max_tokens,
                    min_new_tokens=max_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                )
            dt = time.perf_counter() - t0
            run.output_tokens += (out.shape[1] - width) * len(batch)
            run.latencies += [dt] * len(batch)
        run.wall_s = time.perf_counter() - t
        runs.append(run)
        print(json.dumps(run.summary()), flush=True)
    return runs


def ratio_table(runs: list[Run]) -> str:
    by = {(r.mode, r.concurrency): r for r in runs}
    levels = sorted({r.concurrency for r in runs})
    lines = [
        "| concurrency | mode | requests | tok/s | latency p50 (s) | latency p99 (s) | TTFT p50 (s) | TTFT p99 (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in levels:
        for mode in ("tailor-http", "engine", "vllm-http", "transformers"):
            r = by.get((mode, c))
            if r:
                s = r.summary()
                ttft = (s["ttft_p50_s"], s["ttft_p99_s"]) if mode != "transformers" else ("-", "-")
                lines.append(
                    f"| {c} | {mode} | {s['requests']} | {s['tok_per_s']} | {s['latency_p50_s']} | "
                    f"{s['latency_p99_s']} | {ttft[0]} | {ttft[1]} |"
                )
    lines += [
        "",
        "| concurrency | tok/s a/b (Tailor HTTP / engine) | p50 latency a/b | tok/s Tailor / bare vLLM HTTP | tok/s a/c (Tailor / transformers) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in levels:
        a, b, t = by.get(("tailor-http", c)), by.get(("engine", c)), by.get(("transformers", c))
        v = by.get(("vllm-http", c))
        av = f"{a.tok_per_s / v.tok_per_s:.3f}" if a and v else "-"
        ab = f"{a.tok_per_s / b.tok_per_s:.3f}" if a and b else "-"
        lab = f"{a.pct(a.latencies, 50) / b.pct(b.latencies, 50):.3f}" if a and b else "-"
        ac = f"{a.tok_per_s / t.tok_per_s:.2f}" if a and t else "-"
        lines.append(f"| {c} | {ab} | {lab} | {av} | {ac} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--min-requests", type=int, default=12, help="requests per level: max(this, 2 x concurrency)"
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["engine", "http", "vllm-http", "transformers"],
        help="engine: (b); http: (a); vllm-http: bare vLLM OpenAI server, same client; transformers: (c)",
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per level and target")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve.json")
    args = parser.parse_args()

    from app.catalog import served_name
    from app.checkpoints.prepare import resolve_backbone
    from app.config import Settings

    settings = Settings()
    settings.engine.max_num_seqs = max(settings.engine.max_num_seqs, max(args.concurrency))
    model = resolve_backbone(settings.model, settings.data_dir)
    runs: list[Run] = []
    name = served_name(model, settings.served_model_name)
    from app.engine.vllm_engine import _apply_environment, cuda_available

    _apply_environment(settings.engine, cuda_available())
    env = {
        **os.environ,
        "TAILOR_ENGINE__MAX_NUM_SEQS": str(settings.engine.max_num_seqs),
        "TAILOR_LOG_LEVEL": "warning",
    }
    targets: list = []
    try:
        if "http" in args.modes:
            targets.append(HTTPTarget("tailor-http", args.port, name, args.max_tokens, env))
        if "vllm-http" in args.modes:
            cmd = vllm_server_command(settings, model, name, args.port + 1)
            targets.append(HTTPTarget("vllm-http", args.port + 1, name, args.max_tokens, env, cmd))

        async def interleaved() -> list[Run]:
            if "engine" in args.modes:
                targets.insert(0, EngineTarget(settings, model, args.max_tokens))
            return await bench_interleaved(targets, args.concurrency, args.min_requests, args.rounds)

        runs += asyncio.run(interleaved())
    finally:
        for target in targets:
            target.close()
    if "transformers" in args.modes:
        import torch

        dtype = (
            settings.engine.dtype
            if settings.engine.dtype != "auto"
            else ("bfloat16" if torch.cuda.is_available() else "float32")
        )
        runs += bench_transformers(model, args.concurrency, args.max_tokens, args.min_requests, dtype)

    table = ratio_table(runs)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                },
                "model": model,
                "max_tokens": args.max_tokens,
                "runs": [r.summary() for r in runs],
                "raw": [asdict(r) for r in runs],
                "table": table,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
