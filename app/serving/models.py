"""Which names a client may pass as ``model``: the bare backbone, or a domain.

A domain is served under its own name and composes the backbone with the domain's knowledge
(and, in later releases, its profile, soft prompt and adapter).
"""

from __future__ import annotations

import time
from collections.abc import Callable
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


@dataclass(frozen=True)
class Target:
    """What a request's ``model`` resolved to."""

    model: str
    domain: str | None = None


@dataclass
class ModelCatalog:
    base_name: str
    base_root: str
    context_window: int
    domains: Callable[[], list[str]] = list
    #: Membership test for one name, so resolving a request never lists every domain on disk.
    has_domain: Callable[[str], bool] = lambda name: False  # noqa: E731
    created: int = field(default_factory=lambda: int(time.time()))

    def resolve(self, name: str) -> Target:
        """Return the request's target or raise the OpenAI-style 404."""
        if name == self.base_name:
            return Target(name)
        if self.has_domain(name):
            return Target(name, domain=name)
        raise APIError(
            404,
            f"The model '{name}' does not exist. Available: {', '.join(self.names())}.",
            param="model",
            code="model_not_found",
        )

    def names(self) -> list[str]:
        return [self.base_name, *self.domains()]

    def listing(self) -> ModelList:
        cards = [
            ModelCard(id=name, created=self.created, root=self.base_root, max_model_len=self.context_window)
            for name in self.names()
        ]
        for card in cards[1:]:
            card.parent = self.base_name
        return ModelList(data=cards)
