"""The prompt encoder's shape. The encoder is a training-time reparameterization: it couples the
virtual tokens, which makes optimisation steadier than free vectors; serving never runs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from soft_prompts.base import SoftPromptConfig


@dataclass(frozen=True)
class PTuningConfig(SoftPromptConfig):
    method: ClassVar[str] = "p_tuning"
    encoder: Literal["mlp", "lstm"] = "mlp"
    encoder_hidden_size: int = 256
    encoder_num_layers: int = 2
    encoder_dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.encoder not in ("mlp", "lstm"):
            raise ValueError("encoder must be 'mlp' or 'lstm'")
        if not 1 <= self.encoder_hidden_size <= 8192:
            raise ValueError("encoder_hidden_size must be 1 to 8192")
        if not 1 <= self.encoder_num_layers <= 8:
            raise ValueError("encoder_num_layers must be 1 to 8")
        if not 0 <= self.encoder_dropout < 1:
            raise ValueError("encoder_dropout must be at least 0 and below 1")
