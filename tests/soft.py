"""Make real PEFT prompt-learning adapters for tests, and PEFT's own greedy output as the reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def peft_prompt(model_path: str, method: str, seed: int, n: int = 8, **config: Any) -> Any:
    """A PEFT model with a seeded soft prompt strong enough to change outputs (fp32, eval mode).

    ``config``: fields that override the backbone's config (a RoPE scaling).
    """
    import torch
    from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, **config)
    if method == "prompt_tuning":
        config = PromptTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=n, prompt_tuning_init="SAMPLE_VOCAB"
        )
    elif method == "p_tuning":
        config = PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=n, encoder_hidden_size=64)
    else:
        config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n)
    model = get_peft_model(base, config)
    if method == "prefix_tuning":
        with torch.no_grad():  # real keys and values are larger than N(0, 1): make the prefix matter
            model.prompt_encoder["default"].embedding.weight.mul_(4.0)
    model.eval()
    return model


def save_peft(model: Any, out: Path) -> dict[str, bytes]:
    """Save as PEFT does; return the two files an import uploads."""
    model.save_pretrained(str(out), safe_serialization=True)
    return {name: (out / name).read_bytes() for name in ("adapter_config.json", "adapter_model.safetensors")}


def peft_greedy(model: Any, tokenizer: Any, text: str, max_tokens: int = 16) -> str:
    """PEFT's greedy continuation of ``text`` tokenized as /v1/completions tokenizes it."""
    import torch

    ids = torch.tensor([tokenizer(text, add_special_tokens=True)["input_ids"]])
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens, do_sample=False
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def upload(name: str, files: dict[str, bytes]) -> tuple[dict, list]:
    """httpx ``data`` and ``files`` for POST /v1/soft-prompts/import."""
    return {"name": name}, [("files", (fname, data)) for fname, data in files.items()]
