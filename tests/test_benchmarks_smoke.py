"""Every benchmark still runs: a broken benchmark fails CI, not the next person who wants its numbers.

Two checks. Fast: every name a benchmark imports, also the imports inside its functions (benchmarks import
the heavy parts lazily, so importing the module proves little), resolves in this checkout. Slow: the
failover benchmark's smoke run (one SIGKILL of a real worker mid-command, one drain) and the hostile-clients
benchmark's (5 % of each attack) end to end through their command lines (``--smoke``).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from benchmarks.__main__ import BENCHMARKS

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, module, name) of every ``import`` and ``from … import`` in the file, at any depth."""
    out: list[tuple[int, str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out += [(node.lineno, node.module, a.name) for a in node.names]
    return out


OURS = ("pipeline", "models", "nodes", "edge", "bridges", "sensorium", "evaluation", "benchmarks")


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_import_of_a_benchmark_resolves(name: str) -> None:
    path = ROOT / "benchmarks" / f"{name}.py"
    importlib.import_module(f"benchmarks.{name}")
    broken = []
    for line, module, attr in _imports(path):
        if module.split(".")[0] not in OURS:
            continue  # third-party libraries are the lock file's business (tests/test_locks.py)
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            broken.append(f"line {line}: import {module}: {exc}")
            continue
        if attr is not None and attr != "*" and not hasattr(mod, attr):
            try:
                importlib.import_module(f"{module}.{attr}")
            except ImportError:
                broken.append(f"line {line}: {module} has no {attr!r}")
    # module.attribute where the module is ours (``from pipeline import media`` … ``media.speech``)
    modules: dict[str, object] = {}
    for _, module, attr in _imports(path):
        if module.split(".")[0] in OURS:
            full = f"{module}.{attr}" if attr else module
            with contextlib.suppress(ImportError):
                modules[attr or module.split(".")[0]] = importlib.import_module(full if attr else module.split(".")[0])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            mod = modules[node.value.id]
            if isinstance(mod, types.ModuleType) and not hasattr(mod, node.attr):
                broken.append(f"line {node.lineno}: {mod.__name__} has no {node.attr!r}")
    assert not broken, f"benchmarks/{name}.py: " + "; ".join(broken)


#: Benchmarks that still put tests/ on sys.path for a harness of the tests (to move next to the code they drive).
STILL_IMPORT_TESTS = {"console", "mqtt"}


@pytest.mark.parametrize("name", BENCHMARKS)
def test_a_benchmark_imports_nothing_from_the_tests(name: str) -> None:
    source = (ROOT / "benchmarks" / f"{name}.py").read_text()
    reaches = '"tests"' in source or "'tests'" in source
    assert reaches == (name in STILL_IMPORT_TESTS), (
        f"benchmarks/{name}.py puts tests/ on sys.path: move what it needs into evaluation/ (or the benchmark)"
        if reaches
        else f"benchmarks/{name}.py no longer imports the tests: take it off STILL_IMPORT_TESTS"
    )


def _smoke_run(name: str, tmp_path: Path) -> dict:
    """``python -m benchmarks.<name> --smoke --out FILE`` through its command line; the JSON it wrote."""
    out = tmp_path / f"{name}.json"
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_failover_benchmark_smoke_run(tmp_path: Path) -> None:
    r = _smoke_run("failover", tmp_path)
    assert r["kills"] == 1 and r["takeover_placement_event_s"]["n"] == 1
    assert r["utterances"] >= 1 and r["utterances_lost"] == 0, r


@pytest.mark.slow
def test_hostile_benchmark_smoke_run(tmp_path: Path) -> None:
    r = _smoke_run("hostile", tmp_path)
    assert [a["attack"] for a in r["attacks"]] == ["events", "unread", "names", "frame"]
    assert all(a["wake_words_during"] > 0 for a in r["attacks"]), r


@pytest.mark.slow
def test_forwarder_benchmark_smoke_run(tmp_path: Path) -> None:
    """The forwarder benchmark against this checkout itself (``--before`` takes any checkout), CI-sized."""
    out = tmp_path / "forwarder.json"
    args = ["--before", str(ROOT), "--quick", "--repeat", "1", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.forwarder", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert set(r["cases"]) == {"audio no keys", "video no keys", "audio CURVE", "video CURVE"}
    for case in r["cases"].values():
        for side in ("before", "after"):
            assert case[side]["received"] > 0.9 * case[side]["sent"], r  # the edge's own streams go through


def test_counting_names_the_counters_it_knows(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import counting

    with pytest.raises(SystemExit) as exc:
        counting.main(["--counters", "after,latest"])
    assert exc.value.code == 2
    assert "expected some of anchor,original,before,after, got 'after,latest'" in capsys.readouterr().err


def test_vision_plays_a_cpu_without_bf16_and_restores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from benchmarks.vision import playing
    from sensorium.models.backends import PRECISION_ENV

    monkeypatch.setenv(PRECISION_ENV, "bf16")
    for wanted, setting_, env in (("int8", "int8", "f32"), ("f32", "auto", "f32"), ("auto", "auto", None)):
        with playing(wanted) as setting:
            assert setting == setting_ and os.environ.get(PRECISION_ENV) == env
        assert os.environ[PRECISION_ENV] == "bf16"
