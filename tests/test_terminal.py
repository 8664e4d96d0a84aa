"""Quiet by default: a user's terminal gets our lines; third-party banners and warnings only with -vv.

Ours (``ours_only``): on stderr, log records of our loggers (``sensorium.*``, ``models.*`` …) and the
lines our commands print (``sensorium <command>: …``, ``demo: …``, ``loading …``); on stdout, our
tables. A third party's line carries one of ``THIRD_PARTY`` (colour codes, glog/absl prefixes,
Ultralytics' banners, Python warnings, paths into site-packages).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_OUR_LOG = re.compile(
    r"^\d{4}-\d\d-\d\d [\d:,]+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"(sensorium|pipeline|models|nodes|edge|bridges|evaluation)[\w.]*: "
)
_OUR_PRINT = re.compile(r"^(sensorium \w+: |demo: |worker \S+: |loading |  voice |  face |enrolled |nobody enrolled)")
THIRD_PARTY = re.compile(
    r"\x1b\[|^[IWEF]\d{4} |absl|TensorFlow|Ultralytics|ultralytics|WARNING ⚠️|PyTorch:|ONNX:|Export complete|"
    r"Predict: |Validate: |netron|\w+Warning: |site-packages/\S+\.py:\d+|onnxruntime|Applied providers|find model"
)


def ours_only(stdout: str, stderr: str) -> list[str]:
    """Lines of a run that are not ours (empty when the terminal held only our lines)."""
    bad = [f"stdout: {ln}" for ln in stdout.splitlines() if THIRD_PARTY.search(ln)]
    for ln in stderr.splitlines():
        if ln.strip() and (THIRD_PARTY.search(ln) or not (_OUR_LOG.match(ln) or _OUR_PRINT.match(ln))):
            bad.append(f"stderr: {ln}")
    return bad


NOISE = textwrap.dedent(
    """
    import logging, os, sys, warnings
    from sensorium.cli import terminal
    terminal.setup(int(sys.argv[1]), capture_native=True)
    warnings.warn_explicit("old api", FutureWarning, "/opt/lib/site-packages/insightface/x.py", 23)
    os.write(2, b"W0000 00:00:1.0 123 feedback.cc:114] native noise\\n")
    os.write(2, b"E0000 00:00:1.0 123 model.cc:9] native failure\\n")
    logging.getLogger("ultralytics").warning("export banner")
    logging.getLogger("sensorium.worker").warning("our warning")
    print("our table")
    print("sensorium demo: our message", file=sys.stderr)
    """
)


def _noise(verbose: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", NOISE, str(verbose)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def test_third_party_output_is_debug_and_ours_is_kept() -> None:
    r = _noise(0)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "our table\n"
    assert "sensorium demo: our message" in r.stderr and "WARNING sensorium.worker: our warning" in r.stderr
    # a native error line still reaches the user (as an error record); its warnings and banners do not
    assert "ERROR thirdparty.native: E0000" in r.stderr
    for noise in ("native noise", "export banner", "FutureWarning", "old api"):
        assert noise not in r.stderr, r.stderr


def test_with_vv_nothing_is_hidden() -> None:
    r = _noise(2)
    assert r.returncode == 0, r.stderr
    for noise in ("native noise", "native failure", "export banner", "FutureWarning: old api", "our warning"):
        assert noise in r.stderr, (noise, r.stderr)


def test_the_definition_of_ours() -> None:
    ok_err = "2026-01-01 10:00:00,123 WARNING sensorium.stage: speaker: no voices\nsensorium enroll: bad file\n"
    assert ours_only("PASS  python  3.11\n", ok_err) == []
    assert ours_only("\x1b[34mPyTorch:\x1b[0m starting\n", "") != []
    assert ours_only("", "W0000 00:00:1.0 1 x.cc:1] noise\n") != []
    assert ours_only("", "/x/site-packages/mtcnn.py:174: SyntaxWarning: is with a literal\n") != []
    assert ours_only("", "2026-01-01 10:00:00,123 WARNING urllib3.connection: retry\n") != []


@pytest.mark.slow
def test_doctor_prints_only_our_lines(tmp_path: Path) -> None:
    """`sensorium doctor` on a deployment whose stages load every model library (export banners included)."""
    config = tmp_path / "deploy.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            data_dir = "{tmp_path / "data"}"
            [hub]
            address = "tcp://127.0.0.1:17900"
            [rooms.kitchen]
            [edges.kitchen-pi]
            room = "kitchen"
            [workers.box]
            device = "cpu"
            stages = ["wake", "stt", "speaker", "detect", "face", "presence"]
            """
        )
    )
    r = subprocess.run(
        [sys.executable, "-m", "sensorium", "doctor", "--config", str(config), "--name", "box", "--hub-timeout", "0.5"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert "PASS  stage detect" in r.stdout and "PASS  stage face" in r.stdout, r.stdout + r.stderr
    assert ours_only(r.stdout, r.stderr) == [], ours_only(r.stdout, r.stderr)
