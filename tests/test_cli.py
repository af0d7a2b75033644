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
