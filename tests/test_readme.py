"""The README's "Use it from…" snippets, run as written against a live server (only the address changes)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r'<!-- snippet: (\S+)(?: expect="([^"]*)")? -->\n```(bash|python)\n(.*?)```', re.DOTALL)
ADDRESS = "http://127.0.0.1:8000"


def snippets() -> list[tuple[str, str | None, str, str]]:
    found = MARKER.findall((ROOT / "README.md").read_text())
    assert len(found) >= 3, "the README lost its snippets"
    return found


def test_every_snippet_runs_against_a_live_server(make_server, base_settings, tmp_path: Path) -> None:
    """On a server of its own (fresh data dir), as a new user's would be."""
    server = make_server(base_settings.model_copy(update={"data_dir": tmp_path / "data"}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    for name, expect, lang, code in snippets():
        assert ADDRESS in code, f"snippet {name} does not talk to the documented address"
        code = code.replace(ADDRESS, server.url)
        cmd = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        print(f"--- {name}\n{run.stdout}")
        assert run.returncode == 0, f"snippet {name} failed:\n{run.stdout}\n{run.stderr}"
        if expect:
            assert expect in run.stdout, f"snippet {name} printed:\n{run.stdout}"


def test_every_marked_snippet_is_recognized() -> None:
    """A marked block the pattern missed (another language, a typo) would silently go untested."""
    assert (ROOT / "README.md").read_text().count("<!-- snippet:") == len(snippets())
