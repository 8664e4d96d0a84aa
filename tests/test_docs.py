"""Docs stay true: the event tables match the message classes; the README names real commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def test_event_tables_are_current() -> None:
    import gen_event_docs

    doc = (ROOT / "docs/events.md").read_text()
    assert gen_event_docs.render(doc) == doc, "docs/events.md is stale: run scripts/gen_event_docs.py"


def test_every_cli_command_has_help() -> None:
    from sensorium.cli import COMMANDS

    for name in COMMANDS:
        r = subprocess.run(
            [sys.executable, "-m", "sensorium", name, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60
        )
        assert r.returncode == 0, f"sensorium {name} --help failed: {r.stderr[-400:]}"
        assert "usage: sensorium" in r.stdout
