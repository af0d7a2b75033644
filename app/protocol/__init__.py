"""Typed request and response models at the HTTP edge, and OpenAI-shaped errors."""
