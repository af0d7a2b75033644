"""LoRA adapters: validated against the served backbone, registered by name, chosen per request."""
