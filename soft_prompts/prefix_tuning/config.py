"""Prefix length and the reparameterization used while training (an MLP from a small embedding to
every layer's keys and values; PEFT's ``prefix_projection``). Only the resulting prefixes are saved."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from soft_prompts.base import SoftPromptConfig


@dataclass(frozen=True)
class PrefixTuningConfig(SoftPromptConfig):
    method: ClassVar[str] = "prefix_tuning"
    projection: bool = True
    encoder_hidden_size: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.encoder_hidden_size <= 8192:
            raise ValueError("encoder_hidden_size must be 1 to 8192")
