"""P-tuning: virtual tokens produced by a small prompt encoder (MLP or LSTM, PEFT's
``PromptEncoder``). The encoder only shapes training; what is served is its output, computed once."""

from soft_prompts.base import MethodSpec
from soft_prompts.p_tuning.config import PTuningConfig
from soft_prompts.p_tuning.model import peft_config

SPEC = MethodSpec("p_tuning", PTuningConfig, peft_config, "embeddings", "P_TUNING")

__all__ = ["SPEC", "PTuningConfig", "peft_config"]
