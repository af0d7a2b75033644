"""Offline model preparation: the default backbone and embedder ship inside PyPI wheels."""
