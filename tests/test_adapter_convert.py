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


class _Tiny(torch.nn.Module):
    """Two linear layers named like a backbone's projections: enough for PEFT's tuners."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.k_proj = torch.nn.Linear(12, 6, bias=False)
        self.down_proj = torch.nn.Linear(6, 12, bias=False)
        with torch.no_grad():
            self.k_proj.weight.copy_(torch.randn(6, 12, generator=g))
            self.down_proj.weight.copy_(torch.randn(12, 6, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.k_proj(x))


def _merged_delta(model, names: list[str]) -> dict[str, torch.Tensor]:
    """PEFT's own answer: merge the adapter into a copy and subtract the base weights."""
    import copy

    base = {n: getattr(model.base_model.model, n).get_base_layer().weight.detach().clone() for n in names}
    merged = copy.deepcopy(model).merge_and_unload()
    return {n: getattr(merged, n).weight.detach() - base[n] for n in names}


def test_ia3_delta_matches_peft_merge_on_both_kinds_of_module() -> None:
    from peft import IA3Config, get_peft_model

    from app.adapters.convert import convert_model

    model = get_peft_model(
        _Tiny(), IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"])
    )
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for layer in (model.base_model.model.k_proj, model.base_model.model.down_proj):
            vec = layer.ia3_l["default"]
            vec.copy_(1 + 0.5 * torch.randn(vec.shape, generator=g))
    # k_proj scales its 6 outputs, down_proj (feed-forward) its 6 inputs
    assert model.base_model.model.k_proj.ia3_l["default"].shape == (6, 1)
    assert model.base_model.model.down_proj.ia3_l["default"].shape == (1, 6)
    expected = _merged_delta(model, ["k_proj", "down_proj"])
    tensors, config, report = convert_model(model, "ia3", energy=1.0, max_rank=16)
    for name in ("k_proj", "down_proj"):
        a = tensors[f"base_model.model.{name}.lora_A.weight"]
        b = tensors[f"base_model.model.{name}.lora_B.weight"]
        assert torch.allclose(b @ a, expected[name], atol=1e-5)
        assert report.modules[name]["energy"] == pytest.approx(1.0)
    # every module at one rank (zero-padded), scale 1
    assert config["r"] == config["lora_alpha"] == report.rank == 6
    assert config["peft_type"] == "LORA" and config["target_modules"] == ["down_proj", "k_proj"]


def test_loha_and_lokr_whole_model_conversion_matches_peft_merge() -> None:
    from peft import LoHaConfig, LoKrConfig, get_peft_model

    from app.adapters.convert import convert_model

    for config in (
        LoHaConfig(r=2, alpha=2, target_modules=["k_proj", "down_proj"], init_weights=False),
        LoKrConfig(r=2, alpha=2, target_modules=["k_proj", "down_proj"], init_weights=False),
    ):
        torch.manual_seed(5)
        model = get_peft_model(_Tiny(), config)
        expected = _merged_delta(model, ["k_proj", "down_proj"])
        tensors, _, report = convert_model(model, config.peft_type.value.lower(), energy=1.0, max_rank=16)
        for name in ("k_proj", "down_proj"):
            a = tensors[f"base_model.model.{name}.lora_A.weight"]
            b = tensors[f"base_model.model.{name}.lora_B.weight"]
            assert torch.allclose(b @ a, expected[name], atol=1e-4), config.peft_type
        capped = convert_model(model, config.peft_type.value.lower(), energy=1.0, max_rank=1)[2]
        assert capped.rank == 1 and capped.summary()["capped_modules"] >= 1
        assert capped.summary()["fidelity"] < 1.0


def test_adalora_above_the_rank_cap_is_refused_not_truncated() -> None:
    from peft import AdaLoraConfig, get_peft_model

    from app.adapters.convert import convert_model

    torch.manual_seed(6)
    config = AdaLoraConfig(init_r=4, target_r=2, total_step=10, target_modules=["k_proj", "down_proj"])
    model = get_peft_model(_Tiny(), config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_E" in name:
                p.copy_(torch.randn_like(p))
    expected = _merged_delta(model, ["k_proj", "down_proj"])
    tensors, _, report = convert_model(model, "adalora", energy=0.5, max_rank=16)  # energy: unused, exact
    assert report.rank == 4 and report.summary()["exact"] and report.summary()["fidelity"] == 1.0
    a, b = tensors["base_model.model.k_proj.lora_A.weight"], tensors["base_model.model.k_proj.lora_B.weight"]
    assert torch.allclose(b @ a, expected["k_proj"], atol=1e-5)
    with pytest.raises(ValueError, match="above this server's largest LoRA rank 2"):
        convert_model(model, "adalora", energy=0.999, max_rank=2)


def test_agreement_counts_each_prompt_up_to_its_first_difference() -> None:
    from app.adapters.convert import agreement

    got = agreement([[1, 2, 3, 4], [5, 6, 7, 8]], [[1, 2, 9, 4], [5, 6, 7, 8]])
    assert got["tokens_equal"] == 6 and got["tokens_total"] == 8 and got["agreement"] == 0.75
    assert got["prompts_identical"] == 1
