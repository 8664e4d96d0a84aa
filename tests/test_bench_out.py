"""Every benchmark's ``--out`` is the JSON file it writes, checked before it measures anything.

A folder (the results folder was once the default) or an unwritable path ends the run at once
with a usage error naming it, instead of an ``IsADirectoryError`` after minutes of measuring.
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path

import pytest

from benchmarks.outfile import out_file

BENCHMARKS = ["mqtt", "vision", "voice", "wyoming"]


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
    assert mod.main(["--out", str(out)]) == 0
    assert measured == ["run"] and out.read_text().strip() == "{}"


def test_every_benchmark_with_out_uses_the_checked_option() -> None:
    root = Path(__file__).resolve().parent.parent / "benchmarks"
    users = sorted(p.stem for p in root.glob("*.py") if '"--out"' in p.read_text() and p.stem != "outfile")
    assert users == [], f"{users} define their own --out; use benchmarks.outfile.add_out"
    with pytest.raises(argparse.ArgumentTypeError, match="is a folder"):
        out_file(str(root / "results"))
