"""Which names a client may pass as ``model``: the bare backbone, a domain, or a LoRA adapter.

A domain composes the backbone with its profile, knowledge and the adapter its profile names; an
adapter name selects the adapter (with the domain it was trained for, if any). A request's
``adapter`` field overrides the adapter either way. Resolving yields a ``Target`` that carries the
profile itself, so a domain deleted after resolving can never be served as the bare backbone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.adapters.registry import AdapterRegistry
from app.domains.profile import DomainProfile
from app.engine import AdapterRef
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
    """What a request's ``model`` (and ``adapter``) resolved to."""

    model: str
    domain: str | None = None
    profile: DomainProfile | None = None
    adapter: AdapterRef | None = None


def _adapter_missing(name: str, why: str) -> APIError:
    return APIError(
        404, f"The adapter '{name}' does not exist{why}.", param="adapter", code="adapter_not_found"
    )


@dataclass
class ModelCatalog:
    base_name: str
    base_root: str
    context_window: int
    domains: Callable[[], list[str]] = list
    #: The profile of a domain (None when there is no such domain), read once per request.
    profile: Callable[[str], DomainProfile | None] = lambda name: None  # noqa: E731
    adapters: AdapterRegistry | None = None
    created: int = field(default_factory=lambda: int(time.time()))

    def _adapter(self, name: str, why: str = "") -> AdapterRef:
        entry = self.adapters.get(name) if self.adapters is not None else None
        if entry is None:
            raise _adapter_missing(name, why)
        return entry.ref(self.adapters.root)

    def resolve(self, name: str, adapter: str | None = None) -> Target:
        """Return the request's target or raise the OpenAI-style 404."""
        if name == self.base_name:
            target = Target(name)
        elif self.adapters is not None and (entry := self.adapters.get(name)) is not None:
            profile = self.profile(entry.domain) if entry.domain else None
            target = Target(name, entry.domain if profile else None, profile, entry.ref(self.adapters.root))
        elif (profile := self.profile(name)) is not None:
            ref = self._adapter(profile.adapter, f" (domain '{name}' names it)") if profile.adapter else None
            target = Target(name, name, profile, ref)
        else:
            raise APIError(
                404,
                f"The model '{name}' does not exist. Available: {', '.join(self.names())}.",
                param="model",
                code="model_not_found",
            )
        if adapter is not None:
            target = Target(target.model, target.domain, target.profile, self._adapter(adapter))
        return target

    def adapter_names(self) -> list[str]:
        return self.adapters.names() if self.adapters is not None else []

    def names(self) -> list[str]:
        return [self.base_name, *self.domains(), *self.adapter_names()]

    def listing(self) -> ModelList:
        def card(name: str, kind: str) -> ModelCard:
            return ModelCard(
                id=name,
                created=self.created,
                root=self.base_root,
                max_model_len=self.context_window,
                parent=None if kind == "base" else self.base_name,
                kind=kind,
            )

        cards = [card(self.base_name, "base")]
        cards += [card(n, "domain") for n in self.domains()]
        cards += [card(n, "adapter") for n in self.adapter_names()]
        return ModelList(data=cards)
