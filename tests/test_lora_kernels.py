"""The grouped CPU LoRA kernels of ``app.engine.lora_guard`` against a row-by-row reference.

Rows without an adapter (index -1) must get nothing added: vLLM's own CPU kernels read -1 as the
last slot, which applied that adapter to plain requests batched with adapter requests.
"""

from __future__ import annotations

import pytest
import torch

from app.engine.lora_guard import expand, expand_slice, shrink

SLOTS, RANK, HIDDEN, OUT = 3, 8, 32, 48


def reference(x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    rows = [
        torch.zeros(weights.shape[-2]) if i < 0 else weights[i].squeeze(0) @ x[t]
        for t, i in enumerate(indices.tolist())
    ]
    return torch.stack(rows)


@pytest.mark.parametrize(
    "indices",
    # one adapter, none, two groups (per-adapter products), three or more (one gathered product)
    [
        [0, 0, 0, 0],
        [-1, -1, -1, -1],
        [2, -1, -1, 2],
        [0, 1, 1, 0],
        [2, -1, 0, -1],
        [-1, 2, 2, 1],
        [1, 0, -1, 2],
    ],
)
def test_shrink_and_expand_match_the_reference(indices: list[int]) -> None:
    torch.manual_seed(0)
    idx = torch.tensor(indices)
    a = torch.randn(SLOTS, 1, RANK, HIDDEN)
    b = torch.randn(SLOTS, 1, OUT, RANK)
    x = torch.randn(len(indices), HIDDEN)

    buffer = torch.full((len(indices), RANK), 7.0)
    shrink(x, a, buffer, idx, 0.5)
    assert torch.allclose(buffer, 0.5 * reference(x, a, idx), atol=1e-5)

    y0 = torch.randn(len(indices), OUT)
    y = y0.clone()
    expand(buffer, b, y, idx, add_inputs=True)
    assert torch.allclose(y, y0 + reference(buffer, b, idx), atol=1e-4)
    plain = torch.tensor([i < 0 for i in indices])
    assert torch.equal(y[plain], y0[plain])  # rows without an adapter: untouched

    wide = torch.randn(len(indices), OUT + 16)
    before = wide.clone()
    expand_slice(buffer, b, wide, idx, 8, OUT, add_inputs=True)
    assert torch.allclose(wide[:, 8 : 8 + OUT], before[:, 8 : 8 + OUT] + reference(buffer, b, idx), atol=1e-4)
    assert torch.equal(wide[:, :8], before[:, :8]) and torch.equal(wide[:, 8 + OUT :], before[:, 8 + OUT :])

    out = torch.full((len(indices), OUT), 3.0)
    expand(buffer, b, out, idx, add_inputs=False)
    assert torch.allclose(out, reference(buffer, b, idx), atol=1e-4)
