"""Tailor: fit one served LLM to many vertical domains without retraining the backbone."""

__version__ = "0.1.0"
