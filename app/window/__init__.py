"""The context window: how long it is, how RoPE is scaled to get there, and what the KV cache needs.

One ``WindowPlan`` is made from the settings and the backbone's config before the engine starts;
vLLM, the prefix-tuning path and the trainers all apply it, so every part of the service uses the
same window and the same positions.
"""

from app.window.memory import KVBudget, kv_budget
from app.window.plan import WindowError, WindowPlan, model_config, plan_window

__all__ = ["KVBudget", "WindowError", "WindowPlan", "kv_budget", "model_config", "plan_window"]
