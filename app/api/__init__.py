"""HTTP routes, one module per route group; dependencies in ``deps``."""
