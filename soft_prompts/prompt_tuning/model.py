"""PEFT's prompt-tuning config for our config: the vectors are trained as they are served."""

from __future__ import annotations

from typing import Any

from soft_prompts.prompt_tuning.config import PromptTuningConfig

_INIT = {"text": "TEXT", "vocab": "SAMPLE_VOCAB", "random": "RANDOM"}


def peft_config(config: PromptTuningConfig, model_path: str) -> Any:
    from peft import PromptTuningConfig as PeftPromptTuningConfig

    return PeftPromptTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=config.num_virtual_tokens,
        prompt_tuning_init=_INIT[config.init],
        prompt_tuning_init_text=config.init_text if config.init == "text" else None,
        tokenizer_name_or_path=model_path if config.init == "text" else None,
    )
