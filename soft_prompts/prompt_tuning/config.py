"""How a prompt-tuning prompt starts: from a text (a domain description), from sampled vocabulary
rows, or at random. Starting from real token embeddings trains faster and more stably than random."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from soft_prompts.base import SoftPromptConfig

Init = Literal["text", "vocab", "random"]


@dataclass(frozen=True)
class PromptTuningConfig(SoftPromptConfig):
    method: ClassVar[str] = "prompt_tuning"
    #: "text" needs ``init_text``; "vocab" samples embedding rows of random tokens.
    init: Init = "vocab"
    init_text: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init not in ("text", "vocab", "random"):
            raise ValueError("init must be 'text', 'vocab' or 'random'")
        if self.init == "text" and not (self.init_text or "").strip():
            raise ValueError("init 'text' needs a non-empty init_text")
        if self.init_text is not None and len(self.init_text) > 4000:
            raise ValueError("init_text is limited to 4000 characters")
