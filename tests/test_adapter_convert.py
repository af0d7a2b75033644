"""The arithmetic that turns PEFT's other adapters into LoRA factors (app/adapters/convert.py)."""

from __future__ import annotations

import pytest
import torch

from app.adapters.convert import adalora_factors, factor_delta


def test_adalora_kept_triplets_are_an_exact_lora() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 32, generator=g), torch.randn(24, 8, generator=g)
    e = torch.randn(8, 1, generator=g)
    e[[1, 4, 6]] = 0.0  # ranks AdaLoRA's budget pruned
    delta = b @ (a * e) * 2.0 / (8.0 + 1e-5)  # PEFT's AdaLoRA get_delta_weight, scaling 2, ranknum 8
    f = adalora_factors(a, e, b, scaling=2.0, ranknum=8.0)
    assert f.rank == 5 and f.a.shape == (5, 32) and f.b.shape == (24, 5)
    assert torch.allclose(f.b @ f.a, delta, atol=1e-6)


def test_a_delta_is_factored_at_the_smallest_rank_that_keeps_its_energy() -> None:
    g = torch.Generator().manual_seed(1)
    low = torch.randn(64, 6, generator=g) @ torch.randn(6, 48, generator=g)
    f = factor_delta(low, energy=0.999)
    assert f.rank <= 6 and f.energy >= 0.999 and not f.capped
    assert torch.allclose(f.b @ f.a, low, atol=1e-3 * low.abs().max())
    # an IA3-like delta (a column-scaled weight) is full rank: the cap decides, and says so
    w = torch.randn(32, 32, generator=g)
    ia3 = w * (torch.rand(32, generator=g) - 0.5)
    capped = factor_delta(ia3, energy=0.999, max_rank=4)
    assert capped.rank == 4 and capped.capped and capped.energy < 0.999
    residual = (ia3 - capped.b @ capped.a).square().sum() / ia3.square().sum()
    assert residual.item() == pytest.approx(1 - capped.energy, abs=1e-4)  # fidelity is what is kept


def test_zero_and_bad_inputs() -> None:
    zero = factor_delta(torch.zeros(4, 5))
    assert zero.rank == 1 and zero.energy == 1.0 and (zero.b @ zero.a).abs().sum() == 0
    with pytest.raises(ValueError):
        factor_delta(torch.ones(2, 2), energy=0.0)
