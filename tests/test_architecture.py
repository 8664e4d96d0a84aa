"""The layer table of docs/architecture.md, enforced: import-linter's contracts (pyproject.toml) hold,
they fail on a back-import, the runtime core imports only light libraries, and every package is placed."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
#: What the runtime core may import besides itself and the standard library (docs/architecture.md).
LIGHT = {"zmq", "msgspec", "numpy", "prometheus_client", "mcap"}
#: Optional, imported lazily where used: torch only to check a GPU placement (the one ignored import of the
#: contracts), scipy only to resample a WAV file at another rate, zstandard only to compress a recording.
LAZY = {("pipeline/worker.py", "torch"), ("pipeline/media.py", "scipy"), ("pipeline/recorder.py", "zstandard")}
#: The layers, each a top-level folder of the checkout, installed under the one name ``sensorium`` (a link
#: ``sensorium/pipeline -> ../pipeline`` for each): a wheel claims no generic top-level name.
LAYERS = ("pipeline", "models", "nodes", "edge", "bridges", "evaluation")


def _lint(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the tree under test, not the editable install's
    return subprocess.run(
        [str(LINT), str(root / "pyproject.toml"), *extra],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_import_contracts_hold() -> None:
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def _copy_tree(dst: Path) -> None:
    for pkg in (*CONFIG["root_packages"], *LAYERS):
        ignore = shutil.ignore_patterns("__pycache__", "results")
        shutil.copytree(ROOT / pkg, dst / pkg, symlinks=True, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")


def test_a_back_import_breaks_the_layers(tmp_path: Path) -> None:
    """The contracts can fail: the runtime core importing the wiring is reported, naming both modules."""
    _copy_tree(tmp_path)
    clock = tmp_path / "pipeline" / "clock.py"
    clock.write_text(clock.read_text() + "\n\ndef _back() -> None:\n    import sensorium.registry  # noqa: F401\n")
    r = _lint(tmp_path, "--no-cache")
    assert r.returncode != 0, r.stdout
    assert "BROKEN" in r.stdout
    assert "sensorium.pipeline.clock -> sensorium.registry" in r.stdout


def test_the_edge_may_not_load_a_stage(tmp_path: Path) -> None:
    _copy_tree(tmp_path)
    agent = tmp_path / "edge" / "retry.py"
    agent.write_text(agent.read_text() + "\n\ndef _stage() -> None:\n    import sensorium.nodes.stt  # noqa: F401\n")
    r = _lint(tmp_path, "--no-cache")
    assert r.returncode != 0, r.stdout
    assert "sensorium.edge.retry -> sensorium.nodes.stt" in r.stdout


BACK_IMPORTS = [
    # (contract id, module file that gets the import, the import, what import-linter must report)
    ("layers", "sensorium/registry.py", "sensorium.cli.doctor", "sensorium.registry -> sensorium.cli.doctor"),
    ("layers", "sensorium/graph.py", "sensorium.apps.agent", "sensorium.graph -> sensorium.apps.agent"),
    (
        "layers",
        "sensorium/apps/agent.py",
        "sensorium.evaluation.demo",
        "sensorium.apps.agent -> sensorium.evaluation.demo",
    ),
    ("layers", "sensorium/cli/commands/hub.py", "benchmarks.bus", "sensorium.cli.commands.hub -> benchmarks.bus"),
    (
        "benchmarks-apart",
        "benchmarks/bus.py",
        "sensorium.cli.commands.hub",
        "benchmarks.bus -> sensorium.cli.commands.hub",
    ),
    ("apps", "sensorium/apps/agent.py", "sensorium.registry", "sensorium.apps.agent -> sensorium.registry"),
    ("pipeline-core", "pipeline/clock.py", "cv2", "sensorium.pipeline.clock -> cv2"),
    (
        "bridges",
        "bridges/mqtt/__init__.py",
        "sensorium.models.vad",
        "sensorium.bridges.mqtt -> sensorium.models.vad",
    ),
    ("mcp-sdk", "nodes/wake.py", "starlette", "sensorium.nodes.wake -> starlette"),
    ("one-name", "benchmarks/bus.py", "pipeline.clock", "benchmarks.bus -> pipeline"),
    ("one-name", "nodes/wake.py", "models.wakeword", "sensorium.nodes.wake -> models"),
    (
        "wyoming-direction",
        "bridges/wyoming/gateway.py",
        "sensorium.bridges.wyoming.handlers",
        "sensorium.bridges.wyoming.gateway -> sensorium.bridges.wyoming.handlers",
    ),
    (
        "wyoming-direction",
        "bridges/wyoming/handlers.py",
        "sensorium.bridges.wyoming.satellite",
        "sensorium.bridges.wyoming.handlers -> sensorium.bridges.wyoming.satellite",
    ),
    (
        "esphome-direction",
        "bridges/esphome/device.py",
        "sensorium.bridges.esphome.server",
        "sensorium.bridges.esphome.device -> sensorium.bridges.esphome.server",
    ),
]


def test_every_contract_has_a_back_import_test() -> None:
    ids = {c["id"] for c in CONFIG["contracts"]}
    tested = {b[0] for b in BACK_IMPORTS} | {"edge"}  # the edge's: test_the_edge_may_not_load_a_stage
    assert ids <= tested, f"contracts without a back-import test: {sorted(ids - tested)}"


@pytest.mark.parametrize(("contract", "path", "target", "reported"), BACK_IMPORTS, ids=[b[2] for b in BACK_IMPORTS])
def test_a_back_import_breaks_its_contract(
    tmp_path: Path, contract: str, path: str, target: str, reported: str
) -> None:
    """Each contract fails on a deliberate import against it, naming the importer and the imported."""
    _copy_tree(tmp_path)
    f = tmp_path / path
    f.write_text(f.read_text() + f"\n\ndef _back() -> None:\n    import {target}  # noqa: F401\n")
    r = _lint(tmp_path, "--no-cache", "--contract", contract)
    assert r.returncode != 0, r.stdout
    assert "BROKEN" in r.stdout
    assert reported in r.stdout


def _imports(path: Path) -> set[str]:
    """The absolute modules a file imports, as written."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


def _top_level_imports(path: Path) -> set[str]:
    return {m.split(".")[0] for m in _imports(path)}


def test_the_runtime_core_imports_only_light_libraries() -> None:
    """An allow-list (a forbidden contract cannot say this): a new library in the core is added here on purpose."""
    wrong = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for module in _imports(path):
            name = module.split(".")[0]
            if name in sys.stdlib_module_names or name in LIGHT or name == "__future__":
                continue
            if module == "sensorium.pipeline" or module.startswith("sensorium.pipeline."):
                continue
            if (rel, name) not in LAZY:
                wrong.append(f"{rel} imports {name}")
    assert not wrong, "the runtime core may import only " + ", ".join(sorted(LIGHT)) + ": " + "; ".join(wrong)


def test_every_module_of_the_wiring_has_a_layer() -> None:
    """A new module in sensorium/ must be placed in the layer table, or the contracts would not see it."""
    named = {m.strip() for layer in CONFIG["contracts"][0]["layers"] for m in layer.replace("|", ":").split(":")}
    missing = []
    for path in sorted((ROOT / "sensorium").iterdir()):
        if path.name in ("__init__.py", "__pycache__"):
            continue
        module = f"sensorium.{path.stem}"
        if module not in named:
            missing.append(module)
    assert not missing, f"add {', '.join(missing)} to a layer of [tool.importlinter] in pyproject.toml"
    assert set(CONFIG["root_packages"]) == {"sensorium", "benchmarks"}
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists() and not p.is_symlink()}
    assert packages - {"tests", "benchmarks", "sensorium"} == set(LAYERS), "a new top-level package: add it to LAYERS"


def test_each_layer_is_installed_under_sensorium() -> None:
    """``sensorium/pipeline`` is the checkout's ``pipeline/`` (a relative link: a clone or a copy keeps it)."""
    for layer in LAYERS:
        link = ROOT / "sensorium" / layer
        assert link.is_symlink() and os.readlink(link) == f"../{layer}", f"sensorium/{layer} must link to ../{layer}"


def test_nothing_imports_a_layer_by_its_generic_name() -> None:
    """Tests, examples and scripts too (the one-name contract sees only the packages): ``import pipeline`` would
    load a second copy of every module beside ``sensorium.pipeline``, with classes that are not the same."""
    wrong = []
    for folder in ("tests", "examples", "scripts", "benchmarks", *LAYERS, "sensorium/cli", "sensorium/apps"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for name in _top_level_imports(path) & set(LAYERS):
                wrong.append(f"{path.relative_to(ROOT)} imports {name} (write sensorium.{name})")
    assert not wrong, "; ".join(wrong)
