"""The context window: settings validation, the window plan, KV-cache sizing, and RoPE tables.

Every invalid combination is refused with a message that names what would work. The plan's two
spellings of each scaling (vLLM's ``hf_overrides``, transformers' config) must give identical
rotary tables: the trainers and the prefix-tuning path load the backbone with transformers, so a
mismatch would train and serve different positions.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import EngineSettings, RopeScaling, Settings
from app.window import WindowError, kv_budget, model_config, plan_window
from app.window.memory import GIB

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def config(model_path: str) -> dict:
    return model_config(model_path)


def _refused(match: str, **engine: object) -> None:
    with pytest.raises(ValidationError, match=match):
        EngineSettings(**engine)


def test_invalid_settings_are_refused_with_what_would_work() -> None:
    _refused(
        r"factor 0.5 must be between 1 and 64.*set max_model_len instead",
        rope_scaling={"rope_type": "linear", "factor": 0.5},
    )
    _refused(
        r"rope_type 'ntk' is not supported; use one of linear, dynamic, yarn",
        rope_scaling={"rope_type": "ntk", "factor": 2},
    )
    _refused(
        r"set context_length .* or rope_scaling .*not both",
        context_length=16384,
        rope_scaling={"rope_type": "yarn", "factor": 2},
    )
    _refused(
        r"context_length 16384 and max_model_len 8192 disagree", context_length=16384, max_model_len=8192
    )
    _refused(
        r"max_model_len 32768 is beyond what factor 2 allows over 8192 positions \(16384\); use factor >= 4",
        max_model_len=32768,
        rope_scaling={"rope_type": "yarn", "factor": 2, "original_max_position_embeddings": 8192},
    )
    _refused(
        r"beta_fast only apply to rope_type 'yarn'",
        rope_scaling={"rope_type": "linear", "factor": 2, "beta_fast": 16},
    )
    _refused(
        r"beta_fast \(1\) must be larger than beta_slow \(2\)",
        rope_scaling={"rope_type": "yarn", "factor": 2, "beta_fast": 1, "beta_slow": 2},
    )
    _refused(r"Extra inputs are not permitted", rope_scaling={"rope_type": "yarn", "factor": 2, "fctor": 3})


def test_rope_scaling_is_read_as_json_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAILOR_ENGINE__ROPE_SCALING", '{"type": "dynamic", "factor": 2.5}')
    rope = Settings().engine.rope_scaling
    assert rope is not None and rope.rope_type == "dynamic" and rope.factor == 2.5  # "type": HF's old key
    monkeypatch.setenv("TAILOR_ENGINE__ROPE_SCALING", '{"rope_type": "yarn", "factor": 0}')
    with pytest.raises(ValidationError, match="factor 0 must be between 1 and 64"):
        Settings()


def test_context_length_picks_yarn_with_the_factor_the_window_needs(config: dict) -> None:
    native = config["max_position_embeddings"]
    plan = plan_window(EngineSettings(context_length=4 * native), config)
    assert plan.window == 4 * native and plan.native == native
    assert plan.rope == {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": native}
    assert plan.engine_overrides()["max_position_embeddings"] == 4 * native
    odd = plan_window(EngineSettings(context_length=12000), config)
    assert odd.window == 12000 and odd.factor == pytest.approx(12000 / native)
    short = plan_window(EngineSettings(context_length=2048), config)
    assert short.window == 2048 and short.rope is None and short.engine_overrides() == {}
    assert plan_window(EngineSettings(), config).window == native  # nothing set: the native window


def test_scaling_without_a_window_takes_all_the_factor_allows(config: dict) -> None:
    native = config["max_position_embeddings"]
    plan = plan_window(EngineSettings(rope_scaling=RopeScaling(rope_type="linear", factor=2)), config)
    assert plan.window == 2 * native
    assert plan.rope is not None and plan.rope["original_max_position_embeddings"] == native
    short_dynamic = plan_window(
        EngineSettings(max_model_len=4096, rope_scaling=RopeScaling(rope_type="dynamic", factor=2)), config
    )
    assert short_dynamic.dynamic_base() == pytest.approx(
        short_dynamic.rope_theta
    )  # nothing past the original positions
    smaller = plan_window(
        EngineSettings(max_model_len=10000, rope_scaling=RopeScaling(rope_type="dynamic", factor=2)), config
    )
    assert smaller.window == 10000


def test_windows_the_backbone_cannot_have_are_refused_before_the_engine(
    config: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", raising=False)
    native = config["max_position_embeddings"]
    with pytest.raises(
        WindowError,
        match=rf"beyond the backbone's native window of {native} tokens; use context_length 20000",
    ):
        plan_window(EngineSettings(max_model_len=20000), config)
    with pytest.raises(
        WindowError,
        match=rf"beyond what yarn factor 2 allows over the backbone's {native} positions .*factor >= 2.441",
    ):
        plan_window(
            EngineSettings(max_model_len=20000, rope_scaling=RopeScaling(rope_type="yarn", factor=2)), config
        )
    shipped = {
        **config,
        "rope_parameters": {
            "rope_type": "yarn",
            "factor": 4.0,
            "rope_theta": 1e4,
            "original_max_position_embeddings": 2048,
        },
    }
    with pytest.raises(WindowError, match="already ships with yarn RoPE scaling"):
        plan_window(EngineSettings(context_length=2 * native), shipped)
    monkeypatch.setenv(
        "VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1"
    )  # measurements only: plain RoPE past the native window
    forced = plan_window(EngineSettings(max_model_len=2 * native), config)
    assert forced.extrapolated and forced.rope is None
    assert forced.engine_overrides() == {"max_position_embeddings": 2 * native}


def test_kv_cache_needs_are_computed_and_a_window_that_cannot_fit_is_refused(config: dict) -> None:
    # SmolLM2-135M: 30 layers x 3 KV heads x 64 x (key + value) x 4 bytes (fp32)
    budget = kv_budget(config, "float32", 32768, 1, 2 * GIB)
    assert budget.bytes_per_token == 2 * 30 * 3 * 64 * 4
    assert budget.problem() is None and budget.full_windows == 1
    assert budget.describe()["window_gib"] == pytest.approx(32768 * 46080 / GIB, abs=1e-3)
    two = kv_budget(config, "float32", 32768, 2, 2 * GIB)
    message = two.problem()
    assert message is not None
    assert "cannot hold 2 request(s) of the 32768-token window: 1.41 GiB each" in message
    assert "TAILOR_ENGINE__KV_CACHE_SPACE_GIB=2.9 or more" in message
    gpu = two.problem(on_gpu=True)
    assert (
        gpu is not None and "vLLM found free on the GPU; raise TAILOR_ENGINE__GPU_MEMORY_UTILIZATION" in gpu
    )
    assert kv_budget(config, "bfloat16", 32768, 2, 2 * GIB).problem() is None  # half the bytes
    assert kv_budget(config, "bfloat16", 32768, 2, None).problem() is None  # GPU: known after start


def test_vllm_and_transformers_compute_the_same_rotary_tables(config: dict, model_path: str) -> None:
    """The spellings the plan gives each side produce the same cos/sin at every position tried."""
    import torch
    from transformers import AutoConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.rotary_embedding import get_rope

    native = config["max_position_embeddings"]
    settings = [
        EngineSettings(context_length=2 * native),
        EngineSettings(rope_scaling=RopeScaling(rope_type="linear", factor=2)),
        EngineSettings(rope_scaling=RopeScaling(rope_type="dynamic", factor=2)),
        EngineSettings(
            max_model_len=3 * native, rope_scaling=RopeScaling(rope_type="yarn", factor=4, beta_fast=16)
        ),
    ]
    for engine in settings:
        plan = plan_window(engine, config)
        vllm_side = plan.engine_overrides()
        with set_current_vllm_config(VllmConfig()):
            rope = get_rope(
                64, vllm_side["max_position_embeddings"], True, vllm_side["rope_parameters"], torch.float32
            )
        positions = torch.tensor([0, 7, 1000, native - 1, native + 5, plan.window - 1])
        served = rope.cos_sin_cache[positions]
        hf = AutoConfig.from_pretrained(model_path, **plan.transformers_overrides())
        cos, sin = LlamaRotaryEmbedding(hf)(torch.zeros(1, len(positions), 64), positions[None])
        trained = torch.cat([cos[0, :, :32], sin[0, :, :32]], dim=-1)
        assert rope.cos_sin_cache.shape[0] >= plan.window, plan.rope
        torch.testing.assert_close(served, trained, rtol=0, atol=1e-5, msg=str(plan.rope))
        unscaled = LlamaRotaryEmbedding(AutoConfig.from_pretrained(model_path))
        plain = torch.cat(
            [t[0, :, :32] for t in unscaled(torch.zeros(1, len(positions), 64), positions[None])], dim=-1
        )
        assert not torch.allclose(plain, trained), "the scaling changed nothing"


def _serve(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "TAILOR_DATA_DIR": str(data_dir), **env}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", *args],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_serve_refuses_an_impossible_window_before_loading(tmp_path: Path, model_path: str) -> None:
    run = _serve(tmp_path, TAILOR_MODEL=model_path, TAILOR_ENGINE__MAX_MODEL_LEN="20000")
    assert run.returncode == 2, run.stderr
    assert (
        "invalid settings: max_model_len 20000 is beyond the backbone's native window of 8192" in run.stderr
    )
    assert "tailor serve --context-length 20000" in run.stderr
    run = _serve(
        tmp_path,
        "--context-length",
        "16384",
        TAILOR_MODEL=model_path,
        TAILOR_ENGINE__ROPE_SCALING='{"rope_type": "linear", "factor": 2}',
    )
    assert run.returncode == 2 and "not both" in run.stderr, run.stderr


def test_serve_exits_when_the_kv_cache_cannot_hold_the_window(tmp_path: Path, model_path: str) -> None:
    run = _serve(
        tmp_path,
        "--context-length",
        "32768",
        "--port",
        "0",
        TAILOR_MODEL=model_path,
        TAILOR_ENGINE__KV_CACHE_SPACE_GIB="1",
    )
    assert run.returncode == 1, run.stderr[-2000:]
    assert (
        "cannot start: WindowError: the KV cache cannot hold 1 request(s) of the 32768-token window"
        in run.stderr
    )
    assert "TAILOR_ENGINE__KV_CACHE_SPACE_GIB=1.5 or more" in run.stderr
    assert "retrying" not in run.stderr
