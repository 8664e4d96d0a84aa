"""Every lock file matches its source, so the set-up installs exactly what the sources ask for.

``uv.lock`` against ``pyproject.toml``; the exported edge lock against ``uv.lock``; each
``requirements/*.txt`` against its ``.in``. Each check re-runs the same command ``scripts/lock.sh``
runs, into a temporary file seeded with the committed lock (uv keeps the locked versions that still
fit), and compares: a source edited without re-locking fails here with the command to run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REQ = REPO / "requirements"


def _uv() -> str:
    uv = REPO / ".cache/tools/bin/uv"
    if not uv.exists():
        pytest.fail("uv is not installed: run scripts/setup.sh (it installs the pinned uv into .cache/tools)")
    return str(uv)


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def _pins(text: str) -> list[str]:
    """``name==version ; markers`` lines of a requirements file, hashes and comments dropped."""
    return sorted(line.rstrip(" \\") for line in text.splitlines() if re.match(r"^[A-Za-z0-9]", line))


def test_uv_lock_matches_pyproject() -> None:
    res = _run(_uv(), "lock", "--check")
    assert res.returncode == 0, f"uv.lock is stale against pyproject.toml: run scripts/lock.sh\n{res.stderr[-2000:]}"


def test_uv_lock_pins_the_torch_set() -> None:
    # One consistent PyTorch set; a loose requirement must never drag in another build.
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    versions = {p["name"]: p["version"] for p in lock["package"] if "version" in p}
    assert versions["torch"] == "2.11.0"
    assert versions["torchvision"] == "0.26.0"
    assert versions["torchaudio"] == "2.11.0"
    names = {p["name"] for p in lock["package"]}
    # the packages override-dependencies removes must not come back through another dependency
    assert not names & {"ultralytics", "opencv-python", "opencv-contrib-python", "typing", "webrtcvad"}


def test_edge_export_matches_uv_lock(tmp_path: Path) -> None:
    out = tmp_path / "edge.txt"
    res = _run(
        _uv(), "export", "--frozen", "--quiet", "--no-dev", "--extra", "edge", "--no-emit-project",
        "--no-header", "--output-file", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert _pins(out.read_text()) == _pins((REQ / "edge.txt").read_text()), (
        "requirements/edge.txt differs from uv.lock's edge extra: run scripts/lock.sh"
    )
    heavy = {"torch", "ultralytics-opencv-headless", "faster-whisper", "mediapipe", "insightface", "jax"}
    assert not {p.split("==")[0] for p in _pins(out.read_text())} & heavy


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("uv", ()),
        ("peers", ("--python-version", "3.11")),
        ("peers-oww", ("--python-version", "3.11", "--override", "requirements/peers-oww.override")),
        ("peers-cuda", ("--python-version", "3.11")),
        ("homeassistant", ("--python-version", "3.13")),
    ],
)
def test_requirements_lock_matches_its_source(name: str, extra: tuple[str, ...], tmp_path: Path) -> None:
    committed = REQ / f"{name}.txt"
    out = tmp_path / f"{name}.txt"
    shutil.copy(committed, out)  # seed: uv keeps the locked versions that still satisfy the source
    res = _run(
        _uv(), "pip", "compile", f"requirements/{name}.in", "--no-config", "--quiet", "--generate-hashes",
        "--universal", "--custom-compile-command", "scripts/lock.sh", *extra, "--output-file", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert _pins(out.read_text()) == _pins(committed.read_text()), (
        f"requirements/{name}.txt is stale against requirements/{name}.in: run scripts/lock.sh"
    )
    assert "--hash=sha256:" in committed.read_text()
