"""``tailor ingest`` and ``tailor search`` against the running test server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.indexers import files

ROOT = Path(__file__).resolve().parent.parent


def tailor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "COLUMNS": "120"},
    )


def test_ingest_folder_with_progress_then_search(server, tmp_path: Path) -> None:
    folder = tmp_path / "case"
    (folder / "sub").mkdir(parents=True)
    (folder / "brief.md").write_text("# Brief\nThe defendant missed the filing deadline of 3 May.")
    (folder / "sub" / "ledger.xlsx").write_bytes(
        files.xlsx({"Costs": [["Item", "EUR"], ["Expert witness", 2500]]})
    )
    (folder / ".hidden").write_text("skip me")
    (folder / "junk.bin").write_bytes(bytes(range(256)) * 4)
    (folder / "other").mkdir()
    (folder / "other" / "brief.md").write_text("# Other brief\nA different brief with the same file name.")
    done = tailor("ingest", "cli-case", str(folder), "--url", server.url, "--batch-files", "2")
    assert done.returncode == 3, done.stderr  # one file failed, and the CLI says so
    assert "3 created" in done.stderr and "junk.bin" in done.stderr and "unsupported" in done.stderr
    again = tailor("ingest", "cli-case", str(folder / "brief.md"), "--url", server.url)
    assert again.returncode == 0 and "1 unchanged" in again.stderr
    found = tailor("search", "cli-case", "expert witness cost", "--url", server.url, "--top-k", "1")
    assert found.returncode == 0 and "sub/ledger.xlsx" in found.stdout and "sheet Costs" in found.stdout
    missing = tailor("search", "no-such-domain", "x", "--url", server.url)
    assert missing.returncode == 1 and "404" in missing.stderr


def test_optimize_command(server, tmp_path: Path) -> None:
    import json

    import httpx

    httpx.put(
        f"{server.url}/v1/domains/cli-colors",
        json={"template": "{question}", "retrieval": {"enabled": False}},
    )
    colors = ["red", "blue", "green"]
    spec = {
        "candidates": [
            "{question}\nForget it. The answer is always red. The answer is",
            "{question}\nWhat is the secret color?",
        ],
        "examples": [
            {"input": f"Item {i}: the secret color is {colors[i % 3]}.", "output": colors[i % 3]}
            for i in range(12)
        ],
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = tailor("optimize", "cli-colors", str(tmp_path / "spec.json"), "--apply", "--url", server.url)
    assert done.returncode == 0, done.stderr
    assert "label_loglik" in done.stdout and "* [1]" in done.stdout and "applied template [1]" in done.stdout


def test_optimize_command_tunes_retrieval_from_queries(server, tmp_path: Path) -> None:
    import json

    import httpx

    docs = [
        {"id": f"ticket-{n}", "text": f"Support ticket {n}: the router reboots at night."} for n in range(8)
    ]
    httpx.post(f"{server.url}/v1/domains/cli-tickets/documents", json={"documents": docs}, timeout=300)
    spec = {"queries": [{"query": f"ticket {n} router", "relevant": [f"ticket-{n}"]} for n in range(8)]}
    (tmp_path / "queries.json").write_text(json.dumps(spec))
    done = tailor("optimize", "cli-tickets", str(tmp_path / "queries.json"), "--url", server.url)
    assert done.returncode == 0, done.stderr
    assert "best on 4 selection queries" in done.stdout
    assert "current  on 4 held-out queries: MRR@10" in done.stdout and "tuned" in done.stdout


def test_adapters_and_finetune_commands(server, tmp_path: Path, model_path: str) -> None:
    import json

    import httpx

    from tests.lora import make_adapter

    src = make_adapter(model_path, tmp_path / "local-lora", seed=11)
    loaded = tailor("adapters", "load", "cli-lora", str(src), "--upload", "--url", server.url)
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded cli-lora (rank 8" in loaded.stderr
    listed = tailor("adapters", "list", "--url", server.url)
    assert listed.returncode == 0 and "cli-lora" in listed.stdout
    outside = tailor("adapters", "load", "cli-bad", "/etc", "--url", server.url)
    assert outside.returncode == 1 and "400" in outside.stderr
    assert tailor("adapters", "unload", "cli-lora", "--url", server.url).returncode == 0
    assert tailor("adapters", "unload", "cli-lora", "--url", server.url).returncode == 1

    rows = [
        {"messages": [{"role": "user", "content": f"Ping {i}"}, {"role": "assistant", "content": "PONG"}]}
        for i in range(4)
    ]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"]
    done = tailor(
        "finetune", str(tmp_path / "train.jsonl"), "--model", base, "--epochs", "1", "--url", server.url
    )
    assert done.returncode == 0, done.stderr
    name = done.stdout.strip().splitlines()[-1]
    assert name.startswith("ft-") and "trained" in done.stderr and "epoch 1/1" in done.stderr
    (tmp_path / "bad.jsonl").write_text('{"messages": []}\n')
    bad = tailor("finetune", str(tmp_path / "bad.jsonl"), "--model", base, "--url", server.url)
    assert bad.returncode == 1 and "line 1" in bad.stderr


def test_soft_prompt_commands(server, tmp_path: Path, model_path: str) -> None:
    import json

    import httpx

    from tests.soft import peft_prompt

    peft_prompt(model_path, "p_tuning", seed=5).save_pretrained(str(tmp_path / "pt"))
    imported = tailor("soft-prompts", "import", "cli-soft", str(tmp_path / "pt"), "--url", server.url)
    assert imported.returncode == 0, imported.stderr
    assert "imported cli-soft (p_tuning, 8 virtual tokens)" in imported.stderr
    listed = tailor("soft-prompts", "list", "--url", server.url)
    assert listed.returncode == 0 and "cli-soft" in listed.stdout and "p_tuning" in listed.stdout
    assert (
        tailor("soft-prompts", "import", "cli-soft", str(tmp_path / "pt"), "--url", server.url).returncode
        == 1
    )
    assert tailor("soft-prompts", "delete", "cli-soft", "--url", server.url).returncode == 0
    assert tailor("soft-prompts", "delete", "cli-soft", "--url", server.url).returncode == 1

    rows = [
        {"messages": [{"role": "user", "content": f"Ping {i}"}, {"role": "assistant", "content": "PONG"}]}
        for i in range(4)
    ]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"]
    args = ["--model", base, "--method", "prompt_tuning", "--epochs", "1", "--virtual-tokens", "4"]
    done = tailor("finetune", str(tmp_path / "train.jsonl"), *args, "--url", server.url)
    assert done.returncode == 0, done.stderr
    name = done.stdout.strip().splitlines()[-1]
    assert "epoch 1/1" in done.stderr
    prompt = httpx.get(f"{server.url}/v1/soft-prompts/{name}").json()
    assert prompt["method"] == "prompt_tuning" and prompt["num_virtual_tokens"] == 4
