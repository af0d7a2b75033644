"""Soft prompts (prompt tuning, P-tuning, prefix tuning): configs, PEFT models, storage, serving glue.

A library: it never imports ``app``, so a notebook can build, save, load and inspect soft prompts
without the service. One folder per method holds its config and the PEFT tuner it trains with;
``store`` saves a trained prompt as a folder (config + ``prompt.safetensors`` + the backbone's
fingerprint) and imports PEFT prompt-learning adapters; ``peft`` builds the PEFT model that trains
one and materializes what is served (the training loop is the service's, ``app.finetune.loop``).

What is served is always a plain tensor: the virtual token vectors (prompt tuning, P-tuning — the
encoder's output, materialized once) or the per-layer key/value prefixes (prefix tuning).
"""

from soft_prompts.base import METHODS, MethodSpec, SoftPromptConfig, config_from_dict, spec_for
from soft_prompts.fingerprint import Fingerprint, FingerprintMismatch, fingerprint_of
from soft_prompts.store import SoftPrompt, SoftPromptError, import_peft, load, save

__all__ = [
    "METHODS",
    "Fingerprint",
    "FingerprintMismatch",
    "MethodSpec",
    "SoftPrompt",
    "SoftPromptConfig",
    "SoftPromptError",
    "config_from_dict",
    "fingerprint_of",
    "import_peft",
    "load",
    "save",
    "spec_for",
]
