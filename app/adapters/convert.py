"""Turning other PEFT adapters into a LoRA vLLM serves: the arithmetic and the whole-model pass.

vLLM serves LoRA only. Every adapter of PEFT's low-rank family adds a weight delta ΔW to a target
module; written as ΔW = B·A with the smallest rank that keeps it, it is a LoRA:

- AdaLoRA stores ΔW = B·(A ⊙ E)·scaling / ranknum with E the singular values its budget kept
  (pruned ones are exactly zero): the kept triplets are a LoRA of that rank, exactly.
- LoHa, LoKr and IA3 have no low-rank form of that shape: their dense ΔW is factored by truncated
  SVD at the smallest rank that keeps a stated share of its energy (sum of squared singular
  values), capped by the server's largest LoRA rank; the share actually kept is the fidelity.

``convert_model`` walks a PEFT model (any of the four, loaded or just trained) and returns the LoRA
tensors and config to save: every module at one rank (the largest any module needed; the others
padded with zeros, which changes nothing and costs nothing vLLM does not already pre-allocate),
alpha equal to that rank so the scale is 1 and everything is folded into ``lora_B``.
``greedy_tokens`` decodes the reference the agreement check compares vLLM's output with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

#: PEFT ``peft_type`` → the method name the API uses; LORA is served as it is.
CONVERTIBLE = {"ADALORA": "adalora", "LOHA": "loha", "LOKR": "lokr", "IA3": "ia3"}
#: The file beside the converted LoRA that says what it came from and how well it matches.
REPORT = "tailor_conversion.json"
#: Where the original PEFT adapter is kept inside the converted folder.
ORIGINAL = "peft"


@dataclass(frozen=True)
class Factored:
    """ΔW ≈ b @ a with ``a``: (rank, in), ``b``: (out, rank); ``energy``: share of ΔW's energy kept."""

    a: torch.Tensor
    b: torch.Tensor
    rank: int
    energy: float
    capped: bool


def adalora_factors(
    lora_a: torch.Tensor, lora_e: torch.Tensor, lora_b: torch.Tensor, scaling: float, ranknum: float
) -> Factored:
    """AdaLoRA's kept triplets as LoRA factors, exactly (to float rounding): b @ a == ΔW."""
    kept = (lora_e.reshape(-1) != 0).nonzero().reshape(-1)
    a = (lora_a * lora_e)[kept]
    b = lora_b[:, kept] * (scaling / (ranknum + 1e-5))
    return Factored(a=a.contiguous(), b=b.contiguous(), rank=int(kept.numel()), energy=1.0, capped=False)


def factor_delta(delta: torch.Tensor, energy: float = 0.999, max_rank: int | None = None) -> Factored:
    """The smallest-rank b @ a keeping ``energy`` of ``delta``'s energy, at most ``max_rank``."""
    if not 0.0 < energy <= 1.0:
        raise ValueError("energy must be in (0, 1]")
    # float32 is 3-4x faster than float64 here and its rounding is far below any energy share asked
    u, s, vh = torch.linalg.svd(delta.to(torch.float32), full_matrices=False)
    power = s.to(torch.float64).square()
    total = float(power.sum())
    if total == 0.0:
        rank = 1  # a zero delta: any rank-1 zero pair serves it exactly
        return Factored(
            a=torch.zeros(1, delta.shape[1], dtype=delta.dtype),
            b=torch.zeros(delta.shape[0], 1, dtype=delta.dtype),
            rank=rank,
            energy=1.0,
            capped=False,
        )
    cumulative = torch.cumsum(power, 0) / total
    needed = int(torch.searchsorted(cumulative, torch.tensor(energy, dtype=cumulative.dtype) - 1e-12)) + 1
    needed = min(needed, len(s))
    rank = min(needed, max_rank) if max_rank else needed
    kept = float(cumulative[rank - 1])
    root = s[:rank].clamp_min(0).sqrt()
    b = (u[:, :rank] * root).to(delta.dtype)
    a = (root[:, None] * vh[:rank]).to(delta.dtype)
    return Factored(a=a.contiguous(), b=b.contiguous(), rank=rank, energy=kept, capped=rank < needed)


@dataclass
class Conversion:
    """What a conversion did, per module and overall (the adapter object reports it)."""

    method: str
    energy_target: float
    max_rank: int
    #: backbone module path → {"rank", "energy", "capped"}
    modules: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return max((m["rank"] for m in self.modules.values()), default=0)

    def summary(self) -> dict[str, Any]:
        energies = [m["energy"] for m in self.modules.values()]
        ranks = [m["rank"] for m in self.modules.values()]
        return {
            "method": self.method,
            "exact": self.method == "adalora",
            "energy_target": self.energy_target,
            "max_rank": self.max_rank,
            "rank": self.rank,
            "mean_rank": round(sum(ranks) / len(ranks), 2) if ranks else 0,
            "fidelity": round(min(energies), 6) if energies else 1.0,
            "mean_fidelity": round(sum(energies) / len(energies), 6) if energies else 1.0,
            "capped_modules": sum(1 for m in self.modules.values() if m["capped"]),
            "modules": self.modules,
        }


def _module_delta(layer: Any, adapter: str) -> torch.Tensor:
    """The dense ΔW (out, in) a LoHa, LoKr or IA3 layer adds to its base linear weight."""
    if hasattr(layer, "ia3_l"):
        base = layer.get_base_layer().weight.detach()
        scale = layer.ia3_l[adapter].detach()
        if getattr(layer, "fan_in_fan_out", False):
            scale = scale.T
        # PEFT merges IA3 as W * l: l is (out, 1) on attention outputs, (1, in) on feed-forward inputs
        return base * (scale - 1.0)
    return layer.get_delta_weight(adapter).detach()


def convert_model(
    model: Any, method: str, energy: float, max_rank: int, adapter: str = "default"
) -> tuple[dict[str, torch.Tensor], dict[str, Any], Conversion]:
    """A PEFT model of ``method`` as LoRA tensors and an ``adapter_config.json`` for them."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    report = Conversion(method=method, energy_target=energy, max_rank=max_rank)
    factors: dict[str, Factored] = {}
    with torch.no_grad():
        for name, layer in model.named_modules():
            if not isinstance(layer, BaseTunerLayer) or adapter not in getattr(layer, "active_adapters", []):
                continue
            module = name.removeprefix("base_model.model.")
            if method == "adalora":
                f = adalora_factors(
                    layer.lora_A[adapter].detach().float(),
                    layer.lora_E[adapter].detach().float(),
                    layer.lora_B[adapter].detach().float(),
                    float(layer.scaling[adapter]),
                    float(layer.ranknum[adapter].item()),
                )
                if f.rank > max_rank:  # AdaLoRA's budget is already a rank: above the cap, refuse
                    raise ValueError(
                        f"{module}: AdaLoRA kept rank {f.rank}, above this server's largest LoRA rank {max_rank}"
                    )
                if f.rank == 0:
                    f = factor_delta(torch.zeros(f.b.shape[0], f.a.shape[1]))
            else:
                f = factor_delta(_module_delta(layer, adapter).float(), energy, max_rank)
            factors[module] = f
            report.modules[module] = {"rank": f.rank, "energy": round(f.energy, 6), "capped": f.capped}
    if not factors:
        raise ValueError("the model has no adapter layers to convert")
    rank = report.rank
    tensors: dict[str, torch.Tensor] = {}
    for module, f in factors.items():
        a = torch.zeros(rank, f.a.shape[1])
        b = torch.zeros(f.b.shape[0], rank)
        a[: f.rank] = f.a
        b[:, : f.rank] = f.b
        tensors[f"base_model.model.{module}.lora_A.weight"] = a.contiguous()
        tensors[f"base_model.model.{module}.lora_B.weight"] = b.contiguous()
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": rank,  # scale 1: the factors carry every scale
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "target_modules": sorted({m.rsplit(".", 1)[-1] for m in factors}),
    }
    return tensors, config, report


def greedy_tokens(model: Any, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy continuations of exactly ``max_new_tokens`` (end-of-text does not stop them, as
    vLLM's ``ignore_eos``), so every position compares like with like."""
    out: list[list[int]] = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for ids in prompts:
            x = torch.tensor([ids], device=device)
            past, tokens = None, []
            for _ in range(max_new_tokens):
                r = model(input_ids=x, past_key_values=past, use_cache=True)
                past = r.past_key_values
                token = int(r.logits[0, -1].argmax())
                tokens.append(token)
                x = torch.tensor([[token]], device=device)
            out.append(tokens)
    return out


def agreement(reference: list[list[int]], served: list[list[int]]) -> dict[str, Any]:
    """Tokens equal / total, each prompt counted up to its first difference: after one, the two
    continue from different text and later positions say nothing."""
    equal = total = exact = 0
    for ref, got in zip(reference, served, strict=True):
        total += len(ref)
        n = 0
        while n < len(ref) and n < len(got) and ref[n] == got[n]:
            n += 1
        equal += n
        exact += n == len(ref)
    return {
        "agreement": round(equal / total, 4) if total else 1.0,
        "tokens_equal": equal,
        "tokens_total": total,
        "prompts_identical": exact,
        "prompts": len(reference),
    }
