"""docs/adding-a-stage.md, performed: its code blocks applied to a temporary copy of the repository give a
working stage (its own test passes there, the docs and contracts still hold, the graph shows it) and
touch only the files the page lists."""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "adding-a-stage.md"
COPY = [
    "pipeline",
    "models",
    "nodes",
    "edge",
    "bridges",
    "sensorium",
    "evaluation",
    "benchmarks",
    "scripts",
    "docs",
    "tests",
]
BLOCK = re.compile(r"<!-- (file|insert-before): ([^ ]+?)(?:: (.+?))? -->\n```[a-z]*\n(.*?)```", re.S)


def apply(doc: str, root: Path) -> list[str]:
    """Write every ``file`` block, insert every ``insert-before`` block; returns the paths touched."""
    touched = []
    for what, path, marker, body in BLOCK.findall(doc):
        target = root / path
        if what == "file":
            target.write_text(body)
        else:
            text = target.read_text()
            at = text.index(f"\n{marker}") + 1
            target.write_text(text[:at] + body + text[at:])
        touched.append(path)
    return touched


def _run(root: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the copy, not the editable install
    return subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


def _changed(a: Path, b: Path, rel: str = "") -> set[str]:
    cmp = filecmp.dircmp(a / rel if rel else a, b / rel if rel else b, ignore=["__pycache__", ".cache", "results"])
    out = {f"{rel}/{f}".lstrip("/") for f in cmp.diff_files + cmp.right_only}
    for sub in cmp.common_dirs:
        if not (b / rel / sub).is_symlink():  # sensorium/nodes is nodes/, counted there
            out |= _changed(a, b, f"{rel}/{sub}".lstrip("/"))
    return out


def test_the_blocks_are_found() -> None:
    touched = [m[1] for m in BLOCK.findall(DOC.read_text())]
    assert touched == ["pipeline/messages.py", "nodes/loudness.py", "tests/test_loudness.py", "loudness.toml"]


@pytest.mark.slow
def test_the_walkthrough_adds_a_working_stage(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for name in COPY:
        # links kept: sensorium/nodes is the copy's nodes/, as in the checkout
        ignore = shutil.ignore_patterns("__pycache__", "results")
        shutil.copytree(ROOT / name, repo / name, symlinks=True, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    before = tmp_path / "before"
    shutil.copytree(repo, before, symlinks=True)

    apply(DOC.read_text(), repo)
    r = _run(repo, "scripts/gen_event_docs.py")
    assert r.returncode == 0, r.stderr

    # What the stage touched: its module, its test, the new event class, the generated event docs (and the config).
    assert _changed(before, repo) == {
        "nodes/loudness.py",
        "tests/test_loudness.py",
        "pipeline/messages.py",
        "docs/events.md",
        "loudness.toml",
    }
    assert "### `loud_sound` — A sound in a room louder than" in (repo / "docs/events.md").read_text()

    tests = [
        "tests/test_loudness.py",
        "tests/test_docs.py::test_event_tables_are_current",
        "tests/test_stage_declaration.py",
        "tests/test_architecture.py::test_the_import_contracts_hold",
    ]
    r = _run(repo, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "failed" not in r.stdout and "passed" in r.stdout

    r = _run(repo, "-m", "sensorium", "graph", "--config", "loudness.toml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "loud_sound       loud_sound/    loudness [box (cpu)]  →  event log" in r.stdout
    assert "WARNING" not in r.stdout

    bad = repo / "bad.toml"
    bad.write_text((repo / "loudness.toml").read_text().replace('refractory = "2s"', 'refractory = "2 seconds"'))
    r = _run(repo, "-m", "sensorium", "graph", "--config", "bad.toml")
    assert r.returncode == 2
    assert "[stages.loudness] refractory: expected a duration like '200ms', '1.5s' or '2m', got '2 seconds'" in r.stderr
