"""The set of domains: configured profiles plus knowledge stores that have no profile yet."""

from __future__ import annotations

from collections.abc import Callable

from app.domains.profile import DomainProfile, DomainProfileIn, default_profile
from app.domains.store import ProfileStore
from app.knowledge.base import KnowledgeBase
from app.protocol.errors import APIError


class DomainRegistry:
    def __init__(self, profiles: ProfileStore, knowledge: KnowledgeBase) -> None:
        self.profiles = profiles
        self.knowledge = knowledge

    def names(self) -> list[str]:
        return sorted(set(self.profiles.names()) | set(self.knowledge.domains()))

    def exists(self, name: str) -> bool:
        return self.profiles.get(name) is not None or self.knowledge.has(name)

    def get(self, name: str) -> DomainProfile | None:
        profile = self.profiles.get(name)
        if profile is None and self.knowledge.has(name):
            return default_profile(name)
        return profile

    @staticmethod
    def check_references(
        body: DomainProfileIn,
        adapter_exists: Callable[[str], bool],
        soft_prompt_exists: Callable[[str], bool] = lambda name: False,
    ) -> None:
        """The soft prompt and adapter a profile names must exist."""
        if body.soft_prompt is not None and not soft_prompt_exists(body.soft_prompt):
            raise APIError(
                422,
                f"No soft prompt named '{body.soft_prompt}' (see GET /v1/soft-prompts).",
                param="soft_prompt",
                code="unknown_soft_prompt",
            )
        if body.adapter is not None and not adapter_exists(body.adapter):
            raise APIError(
                422,
                f"No adapter named '{body.adapter}' is loaded (see GET /v1/adapters).",
                param="adapter",
                code="unknown_adapter",
            )
