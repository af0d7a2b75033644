"""The conversion process: ``python -m app.adapters.conversion_worker SPEC.json``.

Loads the served checkpoint and an imported PEFT adapter (AdaLoRA, LoHa, LoKr or IA3) with PEFT
itself, writes the LoRA vLLM will serve (``app.adapters.convert``) and PEFT's own greedy output on
the agreement prompts, the reference the server compares vLLM's output with. Apart from the server
for the same reasons as the trainer: the backbone is loaded a second time, and a crash touches
nothing served. The trainer calls ``write_converted`` on the model it has just trained.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from app.adapters.convert import REPORT, convert_model, greedy_tokens


def write_converted(model: Any, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """Convert ``model`` (a PEFT model) into a LoRA folder at ``out``; return the report."""
    from safetensors.torch import save_file

    model.eval()
    tensors, config, report = convert_model(
        model, spec["method"], float(spec["energy"]), int(spec["max_rank"])
    )
    config["base_model_name_or_path"] = spec.get("base_model_name") or spec["model_path"]
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    prompts = spec.get("prompts") or []
    summary = report.summary()
    summary["reference"] = {
        "prompts": prompts,
        "max_new_tokens": int(spec.get("max_new_tokens", 0)),
        "tokens": greedy_tokens(model, prompts, int(spec.get("max_new_tokens", 0))) if prompts else [],
    }
    (out / REPORT).write_text(json.dumps(summary), encoding="utf-8")
    return summary


def convert(spec: dict[str, Any]) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    threads = int(spec.get("threads") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    base = AutoModelForCausalLM.from_pretrained(
        spec["model_path"], dtype=torch.float32, **(spec.get("config_overrides") or {})
    )
    # the folder holds adapter_config.json and adapter_model.safetensors only: the service refused
    # any pickle file before this process started
    model = PeftModel.from_pretrained(base, spec["peft_dir"])
    summary = write_converted(model, spec, Path(spec["output_dir"]))
    print(json.dumps({"type": "done", "rank": summary["rank"], "fidelity": summary["fidelity"]}), flush=True)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    try:
        convert(spec)
    except ValueError as exc:  # a conversion the settings refuse (AdaLoRA above the cap, no layers)
        print(json.dumps({"type": "refused", "message": str(exc)}), flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
