"""Soft prompts (prompt tuning, P-tuning, prefix tuning): configs, encoders, training, storage.

A library: it never imports ``app``. Served as prompt embeddings built by the server; the engine
already starts with prompt embeddings enabled.
"""
