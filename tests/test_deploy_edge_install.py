"""The locked edge set and the project into a fresh virtual environment with pip, as on a Raspberry Pi.

The edge extra must bring only capture, playback, local wake gating and the bus: no torch and no
model library. ``pip install --no-deps`` of the project after the lock would fail to import if the
lock missed a dependency, and a heavy dependency slipping into the core or the extra fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = {
    "torch",
    "torchvision",
    "torchaudio",
    "ultralytics",
    "ultralytics-opencv-headless",
    "faster-whisper",
    "ctranslate2",
    "speechbrain",
    "mediapipe",
    "insightface",
    "resemblyzer",
    "tensorflow",
    "jax",
    "piper-tts",
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def edge_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("edge") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    # as deploy/install-edge.sh does: the locked edge set (hashes checked), then the project on top
    for args in (["--require-hashes", "-r", str(REPO / "requirements/edge.txt")], ["--no-deps", str(REPO)]):
        res = subprocess.run([*pip, *args], capture_output=True, text=True, timeout=900)
        if res.returncode != 0 and ("Could not find a version" in res.stderr or "NewConnectionError" in res.stderr):
            pytest.skip(f"no package index reachable: {res.stderr.strip().splitlines()[-1]}")
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return venv


@pytest.fixture(scope="module")
def user_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An agent author's own code, with modules named like sensorium's folders; the commands run from here (run
    from the checkout, ``python -c`` would import the checkout's folders instead of what pip installed)."""
    project = tmp_path_factory.mktemp("project")
    (project / "models.py").write_text("OWNER = 'the user'\n")
    (project / "pipeline").mkdir()
    (project / "pipeline" / "__init__.py").write_text("OWNER = 'the user'\n")
    return project


def _python(edge_venv: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``code`` run by the edge venv's Python from ``cwd``."""
    return subprocess.run(
        [str(edge_venv / "bin/python"), "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_the_installed_project_claims_only_the_name_sensorium(edge_venv: Path) -> None:
    """What pip installed (its RECORD): one package, ``sensorium``, and the command; no ``models`` or ``pipeline``."""
    records = list((edge_venv / "lib").glob("python*/site-packages/sensorium-*.dist-info/RECORD"))
    assert len(records) == 1, records
    tops = {line.split(",")[0].split("/")[0] for line in records[0].read_text().splitlines() if line}
    assert tops - {"..", "__pycache__"} == {"sensorium", records[0].parent.name}
    assert {"sensorium/pipeline/client.py", "sensorium/nodes/stt/endpoint.py", "sensorium/edge/agent.py"} <= {
        line.split(",")[0] for line in records[0].read_text().splitlines()
    }


def test_a_users_own_models_and_pipeline_stay_theirs(edge_venv: Path, user_project: Path) -> None:
    """The public import beside the user's own ``models`` and ``pipeline``: both sides get their own module."""
    code = (
        "import models, pipeline\n"
        "from sensorium import Client, messages\n"
        "import sensorium.pipeline.config\n"
        "print(models.OWNER, pipeline.OWNER, Client.__module__, messages.Transcript.__name__)\n"
        "print(sensorium.pipeline.config.__file__)\n"
    )
    res = _python(edge_venv, code, user_project)
    assert res.returncode == 0, res.stderr[-3000:]
    first, path = res.stdout.splitlines()
    assert first == "the user the user sensorium.pipeline.client Transcript"
    assert "site-packages/sensorium/pipeline/config.py" in path


def test_edge_extra_pulls_no_heavy_library(edge_venv: Path) -> None:
    res = subprocess.run(
        [str(edge_venv / "bin/python"), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(res.stdout)}
    assert "sensorium" in installed
    assert {"pyzmq", "msgspec", "numpy", "sounddevice", "opencv-python-headless", "onnxruntime"} <= installed
    assert not installed & HEAVY, f"heavy libraries in the edge install: {sorted(installed & HEAVY)}"


def test_edge_help_runs_in_the_edge_venv(edge_venv: Path, user_project: Path) -> None:
    res = subprocess.run(
        [str(edge_venv / "bin/sensorium"), "edge", "--help"],
        cwd=user_project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "usage: sensorium edge" in res.stdout


def test_edge_modules_import_without_heavy_libraries(edge_venv: Path, user_project: Path) -> None:
    """The edge's import graph (CLI, config, bus, edge agent) never reaches a model library."""
    code = (
        "import sys, importlib\n"
        "import sensorium.cli, sensorium.pipeline.config, sensorium.pipeline.bus, sensorium.pipeline.codec\n"
        "for m in ('sensorium.edge', 'sensorium.cli.commands.edge', 'sensorium.cli.commands.doctor', "
        "'sensorium.registry'):\n"
        "    importlib.import_module(m)\n"
        "sensorium.cli.build_parser()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'ultralytics', 'faster_whisper', 'speechbrain', 'mediapipe', 'insightface', 'resemblyzer'})\n"
        "print(heavy)\n"
    )
    res = _python(edge_venv, code, user_project)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "[]"


def test_doctor_runs_on_an_edge_only_install(edge_venv: Path, user_project: Path) -> None:
    """On a Pi (edge extra only) the doctor loads the four-GPU house file and checks the edge node."""
    doctor = [str(edge_venv / "bin/sensorium"), "doctor", "--json", "--hub-timeout", "0.2"]
    res = subprocess.run(
        [*doctor, "--config", str(REPO / "examples/deploy-4gpu.toml"), "--name", "living-room-pi"],
        cwd=user_project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode in (0, 1), res.stderr[-3000:]
    findings = {f["check"]: f for f in json.loads(res.stdout)}
    assert findings["config"]["status"] == "PASS"
    assert {"microphone living-room-pi", "camera living-room-pi/living-room-cam", "hub"} <= set(findings)
    assert "stage detect" not in findings  # an edge node is not checked for the workers' stages


def test_every_edge_dependency_has_an_aarch64_wheel() -> None:
    """deploy/check-aarch64.sh: the locked edge set downloads for 64-bit Pi OS (CPython 3.11) as wheels only."""
    res = subprocess.run(
        ["bash", str(REPO / "deploy/check-aarch64.sh"), sys.executable], capture_output=True, text=True, timeout=600
    )
    if res.returncode != 0 and ("NewConnectionError" in res.stdout or "Could not fetch URL" in res.stdout):
        pytest.skip("no package index reachable")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "PASS: every locked edge dependency installs from aarch64 wheels" in res.stdout
    wheels = [ln.strip() for ln in res.stdout.splitlines() if ln.strip().endswith(".whl")]
    assert any("onnxruntime" in w and "aarch64" in w for w in wheels)
    assert not any(w.split("-")[0].lower() in {"torch", "ultralytics", "mediapipe"} for w in wheels)
