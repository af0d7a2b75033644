"""The trainer process: ``python -m app.finetune.worker SPEC.json``.

Runs apart from the server so serving goes on (and a crash or a kill touches nothing served).
Reads token ids prepared by the service (prompt ids, answer ids), trains a PEFT LoRA on the very
checkpoint vLLM serves (fp32 on CPU, bf16 on CUDA), and writes the adapter in PEFT format to the
output folder. Progress goes to stdout as one JSON object per line; errors to stderr.

The schedule is AdamW with a linear warm-up over the first 10 % of steps and a linear decay to
zero; the loss is the mean cross-entropy over answer tokens only.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path


def emit(kind: str, **data: object) -> None:
    print(json.dumps({"type": kind, **data}), flush=True)


def _batches(examples: list[dict], batch_size: int, rng: random.Random) -> list[list[dict]]:
    order = examples[:]
    rng.shuffle(order)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _collate(batch: list[dict], pad_id: int, device):
    import torch

    seqs = [e["prompt_ids"] + e["answer_ids"] for e in batch]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (e, seq) in enumerate(zip(batch, seqs, strict=True)):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        start = len(e["prompt_ids"])
        labels[row, start : len(seq)] = torch.tensor(e["answer_ids"])
    return ids.to(device), mask.to(device), labels.to(device)


def _loss(model, batch: list[dict], pad_id: int, device):
    import torch

    ids, mask, labels = _collate(batch, pad_id, device)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    target = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return loss, int((target != -100).sum())


def _read(path: str | None) -> list[dict]:
    if not path:
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def evaluate(model, examples: list[dict], batch_size: int, pad_id: int, device) -> float:
    import torch

    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            loss, n = _loss(model, examples[i : i + batch_size], pad_id, device)
            total, tokens = total + float(loss), tokens + n
    model.train()
    return total / max(tokens, 1)


def train(spec: dict) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    threads = int(spec.get("threads") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    seed = int(spec["seed"])
    random.seed(seed)
    torch.manual_seed(seed)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    hp = spec["hyperparameters"]
    model = AutoModelForCausalLM.from_pretrained(spec["model_path"], dtype=dtype).to(device)
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=hp["rank"],
        lora_alpha=hp["alpha"],
        lora_dropout=hp["dropout"],
        target_modules=hp["target_modules"],
        bias="none",
    )
    model = get_peft_model(model, config)
    model.train()
    train_set, valid_set = _read(spec["train_path"]), _read(spec.get("valid_path"))
    pad_id = int(spec["pad_id"])
    batch_size, epochs = hp["batch_size"], hp["n_epochs"]
    steps_per_epoch = math.ceil(len(train_set) / batch_size)
    total_steps = steps_per_epoch * epochs
    warmup = max(1, total_steps // 10)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=hp["learning_rate"], weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / warmup if s < warmup else max(0.0, (total_steps - s) / max(1, total_steps - warmup))
        ),
    )
    rng = random.Random(seed)
    emit("start", total_steps=total_steps, n_epochs=epochs, examples=len(train_set), device=str(device))
    step, trained_tokens, started = 0, 0, time.monotonic()
    for epoch in range(1, epochs + 1):
        epoch_started = time.monotonic()
        for batch in _batches(train_set, batch_size, rng):
            loss_sum, n = _loss(model, batch, pad_id, device)
            loss = loss_sum / max(n, 1)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            trained_tokens += sum(len(e["prompt_ids"]) + len(e["answer_ids"]) for e in batch)
            emit(
                "step",
                step=step,
                total_steps=total_steps,
                epoch=epoch,
                train_loss=round(loss.item(), 4),
                trained_tokens=trained_tokens,
            )
        valid_loss = round(evaluate(model, valid_set, batch_size, pad_id, device), 4) if valid_set else None
        emit("epoch", epoch=epoch, valid_loss=valid_loss, seconds=round(time.monotonic() - epoch_started, 2))
    out = Path(spec["output_dir"])
    model.save_pretrained(str(out), safe_serialization=True)
    emit("done", trained_tokens=trained_tokens, seconds=round(time.monotonic() - started, 2))


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
