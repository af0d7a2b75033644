"""The soft prompts the service serves by name (see ``soft_prompts`` for the library itself)."""
