"""Domain profiles at the edge, and template optimization requests and results."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.protocol.profiles import DomainProfile, Example


class KnowledgeStats(BaseModel):
    documents: int
    chunks: int


class DomainPublic(DomainProfile):
    object: Literal["domain"] = "domain"
    configured: bool = Field(description="False for a domain that only has documents (default profile).")
    knowledge: KnowledgeStats | None = None


class DomainList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DomainPublic]
    warnings: list[str] = Field(
        default_factory=list, description="Profile files that could not be loaded and were set aside."
    )


class TuningQuery(BaseModel):
    """A labelled search: the documents (ids) that answer ``query``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    query: str = Field(..., min_length=1, max_length=4000)
    relevant: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        ..., min_length=1, max_length=100, description="Ids of the documents that answer the query."
    )


class OptimizeRequest(BaseModel):
    """Either template selection (``candidates`` + ``examples``) or retrieval tuning (``queries``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    candidates: list[str] | None = Field(
        None, min_length=1, max_length=20, description="Templates to compare."
    )
    examples: list[Example] | None = Field(None, min_length=4, max_length=2000)
    queries: list[TuningQuery] | None = Field(
        None,
        min_length=4,
        max_length=5000,
        description="Retrieval tuning: labelled queries; the mode, fusion and top_k with the best "
        "MRR@10 on the selection part are compared with the profile's on the held-out part.",
    )
    apply: bool = Field(
        False,
        description="Store the winner in the profile: the template, or the retrieval settings "
        "(retrieval: only when they do not lose to the profile's on the held-out queries).",
    )
    metric: Literal["auto", "label_loglik", "exact", "f1"] = Field(
        "auto",
        description="label_loglik: pick the label the backbone finds most likely (prompt log-probs); "
        "exact / f1: compare greedy answers. auto: label_loglik when outputs are a few labels.",
    )
    holdout: float = Field(
        0.5, gt=0.0, lt=1.0, description="Fraction of examples (or queries) held out for scoring."
    )
    few_shot: int = Field(0, ge=0, le=16, description="Training examples placed in {examples} / as turns.")
    use_retrieval: bool = Field(False, description="Retrieve from the domain's documents while scoring.")
    ensemble: int = Field(
        3, ge=0, le=10, description="Also score a vote of the best N templates (label tasks)."
    )
    seed: int = 0
    max_tokens: int = Field(32, ge=1, le=512, description="Answer length for exact / f1.")

    @model_validator(mode="after")
    def _one_kind(self) -> OptimizeRequest:
        templates = self.candidates is not None or self.examples is not None
        if templates and self.queries is not None:
            raise ValueError("send either candidates + examples (templates) or queries (retrieval), not both")
        if self.queries is None and (self.candidates is None or self.examples is None):
            raise ValueError(
                "template selection needs candidates and examples; retrieval tuning needs queries"
            )
        return self


class CandidateScore(BaseModel):
    index: int
    template: str
    score: float
    correct: int
    total: int


class OptimizeResult(BaseModel):
    metric: str
    labels: list[str] | None
    train_size: int
    heldout_size: int
    scores: list[CandidateScore]
    best: int
    ensemble: dict | None = None
    applied: bool = False
    profile_version: int | None = None
