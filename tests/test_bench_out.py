"""Every benchmark's ``--out`` is the JSON file it writes, checked before it measures anything.

A folder (the results folder was once the default) or an unwritable path ends the run at once
with a usage error naming it, instead of an ``IsADirectoryError`` after minutes of measuring.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.outfile import checkpoint, out_file, write_results

BENCHMARKS = ["bus", "console", "counting", "esphome", "mixed", "mqtt", "replay", "talk", "vision", "voice", "wyoming"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", BENCHMARKS)
def test_a_folder_or_unwritable_out_stops_before_measuring(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    mod = importlib.import_module(f"benchmarks.{name}")
    measured: list[str] = []
    monkeypatch.setattr(mod, "run", lambda *a, **k: measured.append("run") or {})
    for bad, why in ((tmp_path, "is a folder"), (f"{tmp_path}/new/", "is a folder")):
        with pytest.raises(SystemExit) as exc:
            mod.main(["--out", str(bad)])
        assert exc.value.code == 2
        assert why in capsys.readouterr().err
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(SystemExit):
            mod.main(["--out", str(locked / "x.json")])
        assert "cannot write" in capsys.readouterr().err
    assert measured == []  # nothing was measured
    # a file path: measured, then written there (its folder created)
    out = tmp_path / "deep" / f"{name}.json"
    monkeypatch.setattr(mod, "render", lambda r: "", raising=False)
    monkeypatch.setattr(mod, "table", lambda r: "", raising=False)
    monkeypatch.setattr(mod, "print_result", lambda r: None, raising=False)
    assert mod.main(["--out", str(out)]) == 0
    assert measured == ["run"] and json.loads(out.read_text()) == {}


def test_every_benchmark_with_out_uses_the_checked_option() -> None:
    root = Path(__file__).resolve().parent.parent / "benchmarks"
    users = sorted(p.stem for p in root.glob("*.py") if '"--out"' in p.read_text() and p.stem != "outfile")
    assert users == [], f"{users} define their own --out; use benchmarks.outfile.add_out"
    with pytest.raises(argparse.ArgumentTypeError, match="is a folder"):
        out_file(str(root / "results"))


def test_every_benchmark_command_line_has_the_one_out() -> None:
    """``--out`` means one thing everywhere: every benchmark that takes options takes the checked JSON file."""
    missing = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        text = path.read_text()
        if "ArgumentParser(" in text and path.stem not in ("__main__", "outfile") and "add_out(" not in text:
            missing.append(path.stem)
    assert missing == [], f"{missing} take options but no --out (benchmarks.outfile.add_out)"


def test_finished_parts_are_in_the_file_before_the_run_ends(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    seen: list[dict] = []

    def run() -> dict:
        results: dict = {"benchmark": "x", "parts": []}
        for part in ("one", "two"):
            results["parts"].append(part)
            checkpoint(results)
            seen.append(json.loads(out.read_text()))
        return results

    assert write_results(out, run) == {"benchmark": "x", "parts": ["one", "two"]}
    assert seen == [
        {"benchmark": "x", "parts": ["one"], "partial": True},
        {"benchmark": "x", "parts": ["one", "two"], "partial": True},
    ]
    assert json.loads(out.read_text()) == {"benchmark": "x", "parts": ["one", "two"]}  # whole: no "partial"
    checkpoint({"outside": True})  # no run being written: nowhere
    assert "outside" not in out.read_text()


@pytest.mark.slow
def test_a_benchmark_killed_midway_keeps_its_finished_parts(tmp_path: Path) -> None:
    """The bus benchmark, SIGKILLed once its first payload size is measured: the file holds that case."""
    out = tmp_path / "bus.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bus", "--quick", "--repeat", "1", "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its hub process goes with it
    )
    try:
        deadline = time.monotonic() + 300
        while not out.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert out.exists(), f"no partial results (exit {proc.poll()})"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    r = json.loads(out.read_text())
    assert r["partial"] is True and r["benchmark"] == "bus"
    assert len(r["cases"]) >= 1
    first = next(iter(r["cases"].values()))
    assert first["ours_msgs_per_s"] > 0 and first["ours_received"] > 0 and first["ours_p50_us"] > 0
