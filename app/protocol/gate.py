"""Request models of the gate routes (``/v1/gate``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LabelledQuery(_Strict):
    input: str = Field(..., min_length=1, max_length=20_000)
    domain: str | None = Field(
        ..., max_length=64, description="The domain that should serve it; null: none (the base model)."
    )


class GateTrainRequest(_Strict):
    """Fit the trained gate from labelled queries (a job)."""

    examples: list[LabelledQuery] = Field(..., min_length=4)
    holdout: float = Field(0.2, ge=0, lt=1, description="Share held out to compare trained vs similarity.")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    apply: bool = Field(True, description="Fit again on every query and use it from the next request.")


class GateScoreRequest(_Strict):
    """Score a text against the domains without generating (what ``model: "auto"`` would do)."""

    input: str = Field(..., min_length=1, max_length=100_000)
    domains: list[str] | None = Field(None, max_length=64, description="Choose among these only.")
    trained: bool = Field(True, description="Use the trained gate when there is one.")
