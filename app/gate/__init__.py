"""The gate: ``model: "auto"`` (or a routing domain) picks the domain that serves a request."""

from app.gate.service import Gate, GateDecision

__all__ = ["Gate", "GateDecision"]
