"""A RoPE-scaled window served end to end: ``tailor serve --context-length`` in a cold process.

Past-8k prompts take minutes each on two CPU cores, so the suite serves the real backbone with its
config saying it was trained on 1024 positions (the weights are the same files) and asks for a
2048-token window: Tailor must pick YaRN x2, report the window everywhere, find a passkey placed
past position 1024 through both OpenAI routes, and budget a domain's passages against the scaled
window. The evidence at 12k-32k on the real native window is ``bench/long_context.py``.
"""

from __future__ import annotations

import json
import shlex
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from bench.long_context import QUESTION, key_for, passkey_prompt
from bench.server import ServerProcess

NATIVE, WINDOW = 1024, 2048


@pytest.fixture(scope="module")
def short_native(tmp_path_factory: pytest.TempPathFactory, model_path: str) -> Path:
    """The backbone's files, linked, with a config that declares 1024 trained positions."""
    folder = tmp_path_factory.mktemp("backbone-1k")
    for item in Path(model_path).iterdir():
        if item.name != "config.json":
            (folder / item.name).symlink_to(item)
    config = json.loads((Path(model_path) / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": NATIVE}))
    return folder


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory, short_native: Path) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("long-context-data")
    server = ServerProcess(
        data / "server.log",
        # the flag users type; ``exec`` so that signals reach the server, not a shell
        command=f"exec {shlex.quote(sys.executable)} -m app.cli serve --context-length {WINDOW}",
        TAILOR_MODEL=str(short_native),
        TAILOR_DATA_DIR=str(data),
        TAILOR_ENGINE__KV_CACHE_SPACE_GIB="1",
    )
    try:
        server.wait_ready(600)
        yield server
    finally:
        code = server.terminate()
        server.leftovers()
        assert code == -signal.SIGTERM, server.tail()


@pytest.fixture(scope="module")
def tokenizer(model_path: str):  # noqa: ANN201 - a transformers tokenizer
    return AutoTokenizer.from_pretrained(model_path)


def _client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=600, max_retries=0)


def test_the_scaled_window_is_reported_everywhere(scaled: ServerProcess) -> None:
    models = _client(scaled).models.list().data
    assert models[0].model_extra["max_model_len"] == WINDOW
    health = httpx.get(f"{scaled.url}/health").json()
    assert health["max_model_len"] == WINDOW
    window = health["window"]
    assert window["native_max_model_len"] == NATIVE
    assert window["rope_scaling"] == {
        "rope_type": "yarn",
        "factor": 2.0,
        "original_max_position_embeddings": NATIVE,
    }
    kv = window["kv_cache"]
    assert kv["bytes_per_token"] == 2 * 30 * 3 * 64 * 4 and kv["full_windows_at_once"] == (1024**3) // (
        WINDOW * kv["bytes_per_token"]
    )


@pytest.mark.parametrize("depth", [0.1, 0.5, 0.9])
def test_a_passkey_past_the_native_window_is_found_through_completions(
    scaled: ServerProcess, tokenizer, depth: float
) -> None:  # noqa: ANN001
    key = key_for(0, 1900, depth)
    prompt = passkey_prompt(tokenizer, 1900, depth, key)
    out = _client(scaled).completions.create(model=_base(scaled), prompt=prompt, max_tokens=8, temperature=0)
    assert out.usage.prompt_tokens > NATIVE + 600  # the key's position and the question lie past 1024
    assert key in out.choices[0].text


def test_a_passkey_past_the_native_window_is_found_through_chat(scaled: ServerProcess, tokenizer) -> None:  # noqa: ANN001
    key = key_for(1, 1900, 0.5)
    text = passkey_prompt(tokenizer, 1900, 0.5, key).removesuffix(QUESTION)
    out = _client(scaled).chat.completions.create(
        model=_base(scaled),
        messages=[{"role": "user", "content": text + "\nWhat is the pass key?"}],
        max_tokens=16,
        temperature=0,
    )
    assert out.usage.prompt_tokens > NATIVE + 600
    assert key in (out.choices[0].message.content or "")


def test_prompts_past_the_scaled_window_get_the_window_error(scaled: ServerProcess, tokenizer) -> None:  # noqa: ANN001
    prompt = passkey_prompt(tokenizer, WINDOW + 200, 0.5, "12345")
    with pytest.raises(openai.BadRequestError) as caught:
        _client(scaled).completions.create(model=_base(scaled), prompt=prompt, max_tokens=8)
    assert caught.value.code == "context_length_exceeded"
    assert f"{WINDOW}" in caught.value.message


def test_a_domain_budgets_its_passages_against_the_scaled_window(scaled: ServerProcess) -> None:
    http = httpx.Client(base_url=scaled.url, timeout=600)
    docs = [
        {"id": f"clause-{i}", "text": f"Clause {i}: the buyer pays invoice {i} within {i + 10} days. " * 7}
        for i in range(12)
    ]
    assert (
        http.post(
            "/v1/domains/contracts/documents", json={"documents": docs}, params={"wait": "true"}
        ).status_code
        == 201
    )
    put = http.put(
        "/v1/domains/contracts",
        json={"template": "{context}\n\nQuestion: {question}", "retrieval": {"top_k": 12}},
    )
    assert put.status_code in (200, 201), put.text
    resp = _client(scaled).chat.completions.create(
        model="contracts", messages=[{"role": "user", "content": "When is invoice 3 paid?"}], max_tokens=16
    )
    context = resp.model_extra["context"]
    assert context["window"] == WINDOW
    # twelve ~110-token passages do not fit the native 1024 positions, and all fit the scaled window
    assert context["passages_used"] == 12 and context["passages_dropped"] == 0
    assert context["prompt_tokens"] > NATIVE


def _base(server: ServerProcess) -> str:
    return _client(server).models.list().data[0].id


def test_the_prefix_path_serves_the_scaled_positions(
    scaled: ServerProcess, short_native: Path, tokenizer, tmp_path: Path
) -> None:  # noqa: ANN001
    """A prefix-tuning prompt on a past-native prompt: served output == PEFT's on the scaled backbone."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from app.config import EngineSettings
    from app.window import model_config, plan_window
    from tests.soft import peft_greedy, peft_prompt, save_peft, upload

    overrides = plan_window(
        EngineSettings(context_length=WINDOW), model_config(str(short_native))
    ).transformers_overrides()
    scaled_peft = peft_prompt(str(short_native), "prefix_tuning", seed=5, **overrides)
    files = save_peft(scaled_peft, tmp_path / "prefix")
    text = passkey_prompt(tokenizer, 1300, 0.5, key_for(2, 1300, 0.5))
    expected = peft_greedy(scaled_peft, tokenizer, text, 12)
    unscaled_base = AutoModelForCausalLM.from_pretrained(str(short_native), dtype=scaled_peft.dtype)
    unscaled = peft_greedy(
        PeftModel.from_pretrained(unscaled_base, str(tmp_path / "prefix")).eval(), tokenizer, text, 12
    )
    assert expected != unscaled  # positions past 1024 differ with and without the scaling

    data, parts = upload("long-prefix", files)
    assert (
        httpx.post(f"{scaled.url}/v1/soft-prompts/import", data=data, files=parts, timeout=120).status_code
        == 201
    )
    served = _client(scaled).completions.create(
        model="long-prefix", prompt=text, max_tokens=12, temperature=0
    )
    assert served.choices[0].text == expected


def test_training_uses_the_scaled_positions(scaled: ServerProcess, tmp_path: Path) -> None:
    from tests.test_finetune import moo_lines, upload, wait

    oai = _client(scaled)
    train = upload(oai, tmp_path, moo_lines())
    job = oai.fine_tuning.jobs.create(
        model=_base(scaled),
        training_file=train.id,
        suffix="long",
        method={
            "type": "prompt_tuning",
            "prompt_tuning": {"hyperparameters": {"n_epochs": 1, "num_virtual_tokens": 4}},
        },
    )
    job = wait(oai, job.id)
    assert job.status == "succeeded", job.error
    events = [e.message for e in oai.fine_tuning.jobs.list_events(job.id, limit=200).data]
    # read back from the model the trainer loaded, not from what it was asked to load
    assert f"Training with the served positions: RoPE yarn x2, base 100000, {WINDOW} positions" in events, (
        events
    )
