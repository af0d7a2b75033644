"""PEFT's P-tuning config for our config."""

from __future__ import annotations

from typing import Any

from soft_prompts.p_tuning.config import PTuningConfig


def peft_config(config: PTuningConfig, model_path: str) -> Any:
    from peft import PromptEncoderConfig

    return PromptEncoderConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=config.num_virtual_tokens,
        encoder_reparameterization_type=config.encoder.upper(),
        encoder_hidden_size=config.encoder_hidden_size,
        encoder_num_layers=config.encoder_num_layers,
        encoder_dropout=config.encoder_dropout,
    )
