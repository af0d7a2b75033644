"""Prompt tuning: trained vectors in front of the input (PEFT's ``PromptEmbedding``)."""

from soft_prompts.base import MethodSpec
from soft_prompts.prompt_tuning.config import PromptTuningConfig
from soft_prompts.prompt_tuning.model import peft_config

SPEC = MethodSpec("prompt_tuning", PromptTuningConfig, peft_config, "embeddings", "PROMPT_TUNING")

__all__ = ["SPEC", "PromptTuningConfig", "peft_config"]
