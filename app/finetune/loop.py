"""The one training loop of the fine-tuning worker: LoRA adapters and soft prompts alike.

Examples are token ids already laid out as serving lays them out: ``prompt_ids`` (context, no
loss) then ``answer_ids`` (the loss). A language-modelling example is all answer. The loss is the
mean cross-entropy over answer tokens; soft-prompt positions a model prepends are cut off the
logits, so the same loop serves every method. AdamW, linear warm-up over the first 10 % of steps,
linear decay to zero, gradient clipping at 1. With validation data, the loop evaluates after each
epoch, stops after ``patience`` epochs without improvement and restores the best epoch's weights.
Progress goes to ``emit(kind, **fields)``: ``start``, ``step``, ``epoch``, ``stopped``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Emit = Callable[..., None]


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int = 0
    #: Epochs without a better validation loss before stopping (0: never stop early).
    patience: int = 2
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    warmup_ratio: float = 0.1


@dataclass(frozen=True)
class LoopResult:
    trained_tokens: int
    epochs_run: int
    best_epoch: int | None
    best_valid_loss: float | None
    stopped_early: bool
    seconds: float


def _collate(batch: list[dict], pad_id: int, device: Any):
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


def batch_loss(model: Any, batch: list[dict], pad_id: int, device: Any) -> tuple[Any, int]:
    """Summed answer-token cross-entropy of a batch and the number of answer tokens."""
    import torch

    ids, mask, labels = _collate(batch, pad_id, device)
    logits = model(input_ids=ids, attention_mask=mask).logits
    logits = logits[:, -ids.shape[1] :][:, :-1].float()  # drop virtual-token positions, then shift
    target = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return loss, int((target != -100).sum())


def evaluate(model: Any, examples: list[dict], batch_size: int, pad_id: int, device: Any) -> float:
    """Mean answer-token loss over ``examples``."""
    import torch

    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            loss, n = batch_loss(model, examples[i : i + batch_size], pad_id, device)
            total, tokens = total + float(loss), tokens + n
    model.train()
    return total / max(tokens, 1)


def _trainable_state(params: list[Any]) -> list[Any]:
    return [p.detach().clone() for p in params]


def train_loop(
    model: Any,
    train_set: list[dict],
    valid_set: list[dict],
    pad_id: int,
    settings: LoopSettings,
    emit: Emit,
    device: Any = "cpu",
    after_step: Callable[[int], None] | None = None,
) -> LoopResult:
    import torch

    if not train_set:
        raise ValueError("no training examples")
    rng = random.Random(settings.seed)
    batch_size, epochs = settings.batch_size, settings.epochs
    steps_per_epoch = math.ceil(len(train_set) / batch_size)
    total_steps = steps_per_epoch * epochs
    warmup = max(1, int(total_steps * settings.warmup_ratio))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / warmup if s < warmup else max(0.0, (total_steps - s) / max(1, total_steps - warmup))
        ),
    )
    model.train()
    emit("start", total_steps=total_steps, n_epochs=epochs, examples=len(train_set), device=str(device))
    step, trained_tokens, started = 0, 0, time.monotonic()
    best_loss: float | None = None
    best_epoch: int | None = None
    best_state: list[Any] | None = None
    stale, stopped, epoch = 0, False, 0
    for epoch in range(1, epochs + 1):
        epoch_started = time.monotonic()
        order = train_set[:]
        rng.shuffle(order)
        for i in range(0, len(order), batch_size):
            batch = order[i : i + batch_size]
            loss_sum, n = batch_loss(model, batch, pad_id, device)
            loss = loss_sum / max(n, 1)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            optimizer.step()
            schedule.step()
            if after_step is not None:  # before the gradients go: AdaLoRA scores ranks by them
                after_step(step)
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
        if valid_loss is None:
            continue
        if best_loss is None or valid_loss < best_loss:
            best_loss, best_epoch, stale = valid_loss, epoch, 0
            best_state = _trainable_state(params) if epoch < epochs else None
        else:
            stale += 1
            if settings.patience and stale >= settings.patience and epoch < epochs:
                stopped = True
                emit("stopped", epoch=epoch, best_epoch=best_epoch, best_valid_loss=best_loss)
                break
    if best_state is not None and best_epoch != epoch:
        with torch.no_grad():
            for p, saved in zip(params, best_state, strict=True):
                p.copy_(saved)
    return LoopResult(
        trained_tokens=trained_tokens,
        epochs_run=epoch,
        best_epoch=best_epoch,
        best_valid_loss=best_loss,
        stopped_early=stopped,
        seconds=round(time.monotonic() - started, 2),
    )
