"""Turning other PEFT adapters into LoRA factors vLLM can serve (issue 23, first brick: the arithmetic).

vLLM serves LoRA only. Every adapter of PEFT's low-rank family adds a weight delta ΔW to a target
module; written as ΔW = B·A with the smallest rank that keeps it, it is a LoRA:

- AdaLoRA stores ΔW = B·(A ⊙ E)·scaling / ranknum with E the singular values its budget kept
  (pruned ones are exactly zero): the kept triplets are a LoRA of that rank, exactly.
- LoHa, LoKr and IA3 have no low-rank form of that shape: their dense ΔW is factored by truncated
  SVD at the smallest rank that keeps a stated share of its energy (sum of squared singular
  values), capped by the server's largest LoRA rank; the share actually kept is the fidelity.

Pure functions over tensors; wiring them to training, import and serving is still to come.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
    u, s, vh = torch.linalg.svd(delta.to(torch.float64), full_matrices=False)
    power = s.square()
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
    root = s[:rank].sqrt()
    b = (u[:, :rank] * root).to(delta.dtype)
    a = (root[:, None] * vh[:rank]).to(delta.dtype)
    return Factored(a=a.contiguous(), b=b.contiguous(), rank=rank, energy=kept, capped=rank < needed)
