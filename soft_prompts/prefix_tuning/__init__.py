"""Prefix tuning (P-tuning v2): learned key/value prefixes in every attention layer (PEFT's
``PrefixEncoder``, with its MLP reparameterization while training). Served as past key/values."""

from soft_prompts.base import MethodSpec
from soft_prompts.prefix_tuning.config import PrefixTuningConfig
from soft_prompts.prefix_tuning.model import peft_config, to_past_key_values

SPEC = MethodSpec("prefix_tuning", PrefixTuningConfig, peft_config, "prefix", "PREFIX_TUNING")

__all__ = ["SPEC", "PrefixTuningConfig", "peft_config", "to_past_key_values"]
