"""Domain profiles at the edge, and template optimization requests and results."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.domains.profile import DomainProfile, Example


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


class OptimizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    candidates: list[str] = Field(..., min_length=1, max_length=20, description="Templates to compare.")
    examples: list[Example] = Field(..., min_length=4, max_length=2000)
    apply: bool = Field(False, description="Store the winning template in the profile.")
    metric: Literal["auto", "label_loglik", "exact", "f1"] = Field(
        "auto",
        description="label_loglik: pick the label the backbone finds most likely (prompt log-probs); "
        "exact / f1: compare greedy answers. auto: label_loglik when outputs are a few labels.",
    )
    holdout: float = Field(0.5, gt=0.0, lt=1.0, description="Fraction of examples held out for scoring.")
    few_shot: int = Field(0, ge=0, le=16, description="Training examples placed in {examples} / as turns.")
    use_retrieval: bool = Field(False, description="Retrieve from the domain's documents while scoring.")
    ensemble: int = Field(
        3, ge=0, le=10, description="Also score a vote of the best N templates (label tasks)."
    )
    seed: int = 0
    max_tokens: int = Field(32, ge=1, le=512, description="Answer length for exact / f1.")


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
