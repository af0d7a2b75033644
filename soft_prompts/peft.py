"""The PEFT model that trains a soft prompt, and the tensor that is served once it is trained.

The training loop itself is the service's (``app.finetune.loop``, shared with LoRA); a notebook can
drive these two functions with any loop of its own.
"""

from __future__ import annotations

from typing import Any


def build_model(base: Any, config: Any, model_path: str) -> Any:
    """The PEFT model that trains ``config`` (a ``SoftPromptConfig``) on ``base``."""
    from peft import get_peft_model

    from soft_prompts.base import spec_for

    return get_peft_model(base, spec_for(config.method).peft_config(config, model_path))


def materialize(peft_model: Any) -> Any:
    """What is served: the virtual vectors, or the prefixes, computed once by the trained encoder."""
    import torch

    peft_model.eval()
    with torch.no_grad():
        return peft_model.get_prompt_embedding_to_save("default").float().contiguous()
