"""``DomainProfile``: everything a domain adds to the backbone, validated at the edge.

A value type of the wire (``PUT /v1/domains/{name}``) that the domain store persists as it is,
so it lives with the protocol, below every layer that uses it.

Templates are checked with ``prompts.template`` (plain placeholders only), unknown fields are
refused, and references to soft prompts and adapters are checked against their registries.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from indexers.store.fusion import Fusion
from prompts.template import DEFAULT_TEMPLATE, PromptTemplate, TemplateError

DEFAULT_SYSTEM = "You are a helpful, precise assistant. Answer in the language of the question."


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FusionSettings(_Strict):
    """How hybrid search combines the dense and the BM25 ranking (see ``indexers.store.fusion``)."""

    method: Literal["relative", "rrf", "dbsf"] = Field(
        "relative",
        description="relative: min-max normalised scores, weighted (Weaviate's relative-score fusion); "
        "rrf: weighted reciprocal-rank fusion; dbsf: scores normalised by mean and 3 standard deviations.",
    )
    dense_weight: float = Field(
        0.5, ge=0.0, le=1.0, description="Share of the dense ranking; BM25 gets the rest."
    )
    rrf_k: int = Field(60, ge=1, le=1000, description="RRF's rank offset (rrf only).")
    adaptive: bool = Field(
        True,
        description="Per query, scale each side's weight by how clearly its best candidate stands "
        "out (a side that did not understand the query has no clear winner).",
    )

    def fusion(self) -> Fusion:
        return Fusion(self.method, self.dense_weight, self.rrf_k, self.adaptive)


class RetrievalSettings(_Strict):
    enabled: bool = Field(True, description="Retrieve from the domain's documents (when it has any).")
    top_k: int = Field(4, ge=1, le=50, description="Passages retrieved per request.")
    mode: Literal["dense", "bm25", "hybrid"] = "hybrid"
    fusion: FusionSettings = Field(default_factory=FusionSettings)
    rerank: bool = Field(
        False, description="Re-score candidates with the configured reranker (TAILOR_KNOWLEDGE__RERANKER)."
    )
    filter: dict[str, Any] | None = Field(
        None, max_length=32, description="Metadata filter applied before ranking."
    )
    min_score: float | None = Field(None, description="Drop passages scoring below this.")


class RetrievalOverride(_Strict):
    """Per-request override of a profile's retrieval settings (unset fields keep the profile's)."""

    enabled: bool | None = None
    top_k: int | None = Field(None, ge=1, le=50)
    mode: Literal["dense", "bm25", "hybrid"] | None = None
    fusion: FusionSettings | None = None
    rerank: bool | None = None
    filter: dict[str, Any] | None = Field(None, max_length=32)
    min_score: float | None = None


class GenerationDefaults(_Strict):
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    stop: list[str] | None = Field(None, max_length=8)


class Example(_Strict):
    input: str = Field(..., min_length=1, max_length=20_000)
    output: str = Field(..., max_length=20_000)


class RouteSettings(_Strict):
    """A routing domain: requests to it are served by whichever listed domain the gate picks."""

    domains: list[str] = Field(..., min_length=1, max_length=64, description="Domains to choose among.")
    threshold: float | None = Field(
        None, ge=-1, le=1, description="The gate's bar for this router (default: the server's)."
    )


class DomainProfileIn(_Strict):
    """The body of ``PUT /v1/domains/{name}``."""

    description: str = Field("", max_length=2000)
    system_prompt: str = Field(DEFAULT_SYSTEM, max_length=20_000)
    template: str = Field(
        DEFAULT_TEMPLATE,
        description="User-turn template; placeholders {question} (required), {context}, {examples}, "
        "{history}, {domain}. Without {examples} the examples become chat turns; without {history} "
        "earlier turns stay chat turns.",
    )
    examples: list[Example] = Field(default_factory=list, max_length=32)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    generation: GenerationDefaults = Field(default_factory=GenerationDefaults)
    soft_prompt: str | None = Field(None, max_length=128, description="Name of a trained soft prompt.")
    adapter: str | None = Field(None, max_length=128, description="Name of a loaded LoRA adapter.")
    route: RouteSettings | None = Field(
        None,
        description="Make this a routing domain: the gate picks one of `route.domains` per request; "
        "when none clears the bar this domain's own profile serves.",
    )

    @field_validator("template")
    @classmethod
    def _safe_template(cls, value: str) -> str:
        try:
            PromptTemplate.parse(value)
        except TemplateError as exc:
            raise ValueError(str(exc)) from exc
        return value


class DomainProfile(DomainProfileIn):
    name: str
    version: int = 1
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)

    @property
    def prompt_template(self) -> PromptTemplate:
        return PromptTemplate.parse(self.template)

    def retrieval_for(self, override: RetrievalOverride | None) -> RetrievalSettings:
        if override is None:
            return self.retrieval
        # an explicit null clears a filter or a score floor; for the other fields it means "the profile's"
        changes = {
            k: getattr(override, k)
            for k in override.model_fields_set
            if getattr(override, k) is not None or k in ("filter", "min_score")
        }
        if override.fusion is not None:  # a partial fusion keeps the profile's other fusion fields
            changes["fusion"] = self.retrieval.fusion.model_copy(
                update={k: getattr(override.fusion, k) for k in override.fusion.model_fields_set}
            )
        return self.retrieval.model_copy(update=changes)


def default_profile(name: str) -> DomainProfile:
    """The profile of a domain that has documents but was never configured."""
    return DomainProfile(name=name, version=0, created_at=0.0, updated_at=0.0)
