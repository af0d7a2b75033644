"""Which names a client may pass as ``model``.

Today only the bare backbone; domain profiles register here next, each served under its own name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from app.protocol.errors import APIError
from app.protocol.openai import ModelCard, ModelList


def served_name(model: str, override: str) -> str:
    """The public name of the backbone: the override, else the checkpoint folder's name."""
    if override:
        return override
    path = Path(model)
    return path.name if path.name else model


@dataclass
class ModelCatalog:
    base_name: str
    base_root: str
    context_window: int
    created: int = field(default_factory=lambda: int(time.time()))

    def resolve(self, name: str) -> str:
        """Return the canonical served name or raise the OpenAI-style 404."""
        if name == self.base_name:
            return name
        raise APIError(
            404,
            f"The model '{name}' does not exist. Available: {', '.join(self.names())}.",
            param="model",
            code="model_not_found",
        )

    def names(self) -> list[str]:
        return [self.base_name]

    def listing(self) -> ModelList:
        card = ModelCard(
            id=self.base_name,
            created=self.created,
            root=self.base_root,
            max_model_len=self.context_window,
        )
        return ModelList(data=[card])
