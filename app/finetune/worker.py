"""The trainer process: ``python -m app.finetune.worker SPEC.json``.

Runs apart from the server so serving goes on (and a crash or a kill touches nothing served).
Reads token ids prepared by the service (prompt ids, answer ids), trains on the very checkpoint
vLLM serves (fp32 on CPU, bf16 on CUDA) with ``app.finetune.loop``, and writes the result
to the output folder: a PEFT LoRA adapter; an AdaLoRA, LoHa, LoKr or IA3 adapter converted to a
LoRA (``app.adapters.conversion_worker.write_converted``, the original kept in ``peft/``); or a soft
prompt folder (``soft_prompts.store``).
Progress goes to stdout as one JSON object per line; errors to stderr.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path

#: Methods whose result is an adapter (served on vLLM's LoRA path); the others are soft prompts.
ADAPTER_METHODS = ("lora", "adalora", "loha", "lokr", "ia3")


def emit(kind: str, **data: object) -> None:
    print(json.dumps({"type": kind, **data}), flush=True)


def _read(path: str | None) -> list[dict]:
    if not path:
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _peft_config(method: str, hp: dict, total_steps: int):
    """PEFT's own config for ``method`` from the resolved hyperparameters (``app.finetune.methods``)."""
    import peft

    common = {"task_type": "CAUSAL_LM", "target_modules": hp["target_modules"]}
    if method == "lora":
        return peft.LoraConfig(
            r=hp["rank"], lora_alpha=hp["alpha"], lora_dropout=hp["dropout"], bias="none", **common
        )
    if method == "adalora":
        # the budget schedule in steps: warm-up at the full rank, pruning, then the final budget
        tinit = int(total_steps * hp["warmup_fraction"])
        tfinal = int(total_steps * hp["final_fraction"])
        if total_steps - tinit - tfinal < 1:
            tinit = tfinal = 0
        return peft.AdaLoraConfig(
            init_r=hp["init_rank"],
            target_r=hp["rank"],
            lora_alpha=hp["alpha"],
            lora_dropout=hp["dropout"],
            total_step=total_steps,
            tinit=tinit,
            tfinal=tfinal,
            deltaT=max(1, (total_steps - tinit - tfinal) // 10),
            **common,
        )
    if method == "loha":
        return peft.LoHaConfig(r=hp["rank"], alpha=hp["alpha"], rank_dropout=hp["dropout"], **common)
    if method == "lokr":
        return peft.LoKrConfig(
            r=hp["rank"],
            alpha=hp["alpha"],
            rank_dropout=hp["dropout"],
            decompose_both=True,  # both Kronecker factors low-rank: ΔW has rank ≤ r², a LoRA of that rank
            decompose_factor=hp["decompose_factor"],
            **common,
        )
    if method == "ia3":
        return peft.IA3Config(feedforward_modules=hp["feedforward_modules"], **common)
    raise ValueError(f"unknown adapter method {method!r}")


def _adapter(model, method: str, hp: dict, total_steps: int):
    from peft import get_peft_model

    return get_peft_model(model, _peft_config(method, hp, total_steps))


def train(spec: dict) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from app.finetune.loop import LoopSettings, train_loop
    from soft_prompts import SoftPrompt, config_from_dict, fingerprint_of, save
    from soft_prompts.peft import build_model, materialize

    threads = int(spec.get("threads") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    seed = int(spec["seed"])
    random.seed(seed)
    torch.manual_seed(seed)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    hp = spec["hyperparameters"]
    method = spec.get("method", "lora")
    # soft prompts train in fp32 everywhere: their gradients pass through the whole backbone
    dtype = torch.bfloat16 if cuda and method in ADAPTER_METHODS else torch.float32
    overrides = spec.get("config_overrides") or {}
    base = AutoModelForCausalLM.from_pretrained(spec["model_path"], dtype=dtype, **overrides).to(device)
    # what the loaded model actually uses, read back from it: the served window's positions
    emit(
        "positions",
        rope_parameters=dict(getattr(base.config, "rope_parameters", None) or {}),
        max_position_embeddings=base.config.max_position_embeddings,
    )
    for p in base.parameters():
        p.requires_grad_(False)
    train_set = _read(spec["train_path"])
    total_steps = math.ceil(len(train_set) / hp["batch_size"]) * hp["n_epochs"]
    soft = config_from_dict(spec["soft_prompt"]) if method not in ADAPTER_METHODS else None
    if soft is None:
        model = _adapter(base, method, hp, total_steps)
    else:
        model = build_model(base, soft, spec["model_path"]).to(device)
    # AdaLoRA reallocates its rank budget after every optimizer step (PEFT's own schedule)
    after_step = model.base_model.update_and_allocate if method == "adalora" else None
    settings = LoopSettings(
        epochs=hp["n_epochs"],
        batch_size=hp["batch_size"],
        learning_rate=hp["learning_rate"],
        seed=seed,
        patience=int(hp.get("early_stopping_patience", 0) or 0),
    )
    result = train_loop(
        model,
        train_set,
        _read(spec.get("valid_path")),
        int(spec["pad_id"]),
        settings,
        emit,
        device,
        after_step=after_step,
    )
    out = Path(spec["output_dir"])
    if method == "lora":
        model.save_pretrained(str(out), safe_serialization=True)
    elif soft is None:
        from app.adapters.conversion_worker import write_converted
        from app.adapters.convert import ORIGINAL

        model.save_pretrained(str(out / ORIGINAL), safe_serialization=True)
        emit("converting")
        summary = write_converted(model.float().cpu(), spec["conversion"], out)
        emit("converted", rank=summary["rank"], fidelity=summary["fidelity"])
    else:
        meta = {
            **spec.get("meta", {}),
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "best_valid_loss": result.best_valid_loss,
        }
        save(SoftPrompt(soft, materialize(model).cpu(), fingerprint_of(spec["model_path"]), meta), out)
    emit("done", trained_tokens=result.trained_tokens, seconds=result.seconds)


def _exit_with_parent() -> None:
    """Stop when the server that started this trainer dies (even by kill -9): no orphan trains on."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _exit_with_parent()
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    train(spec)


if __name__ == "__main__":
    main()
