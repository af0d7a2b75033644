"""PEFT's prefix-tuning config, and the saved prefix tensor as per-layer keys and values.

PEFT saves a prefix as one ``(virtual tokens, layers × 2 × kv heads × head dim)`` tensor (for
grouped-query attention it sizes prefixes by the key/value heads). ``to_past_key_values`` lays it
out as each layer's ``(key, value)``, each ``(1, kv heads, virtual tokens, head dim)`` — the shape
a decoder's cache holds. The keys are used as they are, without rotary positions, as in training.
"""

from __future__ import annotations

from typing import Any

from soft_prompts.prefix_tuning.config import PrefixTuningConfig


def peft_config(config: PrefixTuningConfig, model_path: str) -> Any:
    from peft import PrefixTuningConfig as PeftPrefixTuningConfig

    return PeftPrefixTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=config.num_virtual_tokens,
        prefix_projection=config.projection,
        encoder_hidden_size=config.encoder_hidden_size,
    )


def to_past_key_values(
    prefix: Any, num_layers: int, num_kv_heads: int, head_dim: int
) -> list[tuple[Any, Any]]:
    n = prefix.shape[0]
    kv = prefix.reshape(n, num_layers * 2, num_kv_heads, head_dim).permute(1, 2, 0, 3)
    return [
        (kv[2 * i].unsqueeze(0).contiguous(), kv[2 * i + 1].unsqueeze(0).contiguous())
        for i in range(num_layers)
    ]
