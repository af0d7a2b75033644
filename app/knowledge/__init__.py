"""The service side of knowledge stores: one collection per domain, the shared embedder, jobs."""
