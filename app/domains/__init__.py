"""Domains: per-request profiles (system prompt, template, examples, retrieval, generation
defaults, soft prompt and adapter references), persisted and versioned."""
