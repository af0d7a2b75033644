"""Which names a client may pass as ``model``: the backbone, a domain, a LoRA adapter or a soft prompt.

A domain composes the backbone with its profile, knowledge and the adapter and soft prompt its
profile names; an adapter or soft-prompt name selects that alone (with the domain it was trained
for, if any). A request's ``adapter`` and ``soft_prompt`` fields override either way. Resolving yields a ``Target`` that carries the
profile itself, so a domain deleted after resolving can never be served as the bare backbone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.adapters.registry import AdapterRegistry
from app.domains.profile import DomainProfile
from app.engine import AdapterRef, SoftPromptRef
from app.protocol.errors import APIError
from app.protocol.openai import ModelCard, ModelList
from app.softprompts.service import SoftPromptService


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
    soft_prompt: SoftPromptRef | None = None


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
    soft_prompts: SoftPromptService | None = None
    #: The knowledge store's embedder as (name, input tokens), once loaded (``/v1/embeddings``).
    embedder: Callable[[], tuple[str, int] | None] = lambda: None  # noqa: E731
    created: int = field(default_factory=lambda: int(time.time()))

    def _adapter(self, name: str, why: str = "") -> AdapterRef:
        entry = self.adapters.get(name) if self.adapters is not None else None
        if entry is None:
            raise _adapter_missing(name, why)
        return entry.ref(self.adapters.root)

    def _soft(self, name: str, why: str = "") -> SoftPromptRef:
        entry = self.soft_prompts.get(name) if self.soft_prompts is not None else None
        if entry is None:
            raise APIError(
                404,
                f"The soft prompt '{name}' does not exist{why}.",
                param="soft_prompt",
                code="soft_prompt_not_found",
            )
        return entry.ref

    def resolve(self, name: str, adapter: str | None = None, soft_prompt: str | None = None) -> Target:
        """Return the request's target or raise the OpenAI-style 404."""
        profile: DomainProfile | None = None
        domain: str | None = None
        ada: AdapterRef | None = None
        soft: SoftPromptRef | None = None
        if name == self.base_name:
            pass
        elif self.adapters is not None and (entry := self.adapters.get(name)) is not None:
            profile = self.profile(entry.domain) if entry.domain else None
            domain, ada = (entry.domain if profile else None), entry.ref(self.adapters.root)
        elif self.soft_prompts is not None and (sp := self.soft_prompts.get(name)) is not None:
            profile = self.profile(sp.domain) if sp.domain else None
            domain, soft = (sp.domain if profile else None), sp.ref
        elif (profile := self.profile(name)) is not None:
            domain = name
            if profile.adapter:
                ada = self._adapter(profile.adapter, f" (domain '{name}' names it)")
            if profile.soft_prompt:
                soft = self._soft(profile.soft_prompt, f" (domain '{name}' names it)")
        else:
            raise APIError(
                404,
                f"The model '{name}' does not exist. Available: {', '.join(self.names())}.",
                param="model",
                code="model_not_found",
            )
        if adapter is not None:
            ada = self._adapter(adapter)
        if soft_prompt is not None:
            soft = self._soft(soft_prompt)
        if ada is not None and soft is not None and soft.kind == "prefix":
            raise APIError(
                400,
                f"The prefix-tuning soft prompt '{soft.name}' cannot be combined with a LoRA adapter "
                f"('{ada.name}'): prefix tuning is served beside vLLM, without LoRA.",
                param="soft_prompt",
                code="unsupported_combination",
            )
        return Target(name, domain, profile, ada, soft)

    def adapter_names(self) -> list[str]:
        return self.adapters.names() if self.adapters is not None else []

    def soft_prompt_names(self) -> list[str]:
        return self.soft_prompts.names() if self.soft_prompts is not None else []

    def names(self) -> list[str]:
        return [self.base_name, *self.domains(), *self.adapter_names(), *self.soft_prompt_names()]

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
        cards += [card(n, "soft_prompt") for n in self.soft_prompt_names()]
        if (emb := self.embedder()) is not None:
            name, window = emb
            cards.append(
                ModelCard(id=name, created=self.created, root=name, kind="embedding", max_model_len=window)
            )
        return ModelList(data=cards)
