"""``sensorium doctor`` on this machine: no GPU and no microphone, and it must say exactly that.

A real hub runs as its own process (``sensorium hub``) with CURVE keys made by the real key code, a
real gallery file holds one enrolled person, and the worker's ``wake`` stage loads its bundled
openWakeWord model. The doctor must pass all of that, fail the microphone (no capture hardware
here), warn that ``cuda:0`` is missing and the worker falls back to the CPU, and exit 1. Then each
kind of damage a user could cause (key readable by others, gallery world-readable or corrupt,
port taken, hub down) turns its check into a FAIL with a fix.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sensorium.cli.doctor import Doctor, Finding, load_any
from sensorium.evaluation.ports import free_tcp_base
from sensorium.pipeline.security import enrol, init_hub, new_node

REPO = Path(__file__).resolve().parents[1]
HAS_SOUND_CARD = any(Path("/dev/snd").glob("pcmC*D*c")) if Path("/dev/snd").is_dir() else False
HAS_GPU = Path("/dev/nvidiactl").exists()


def write_config(tmp: Path, base: int, *, mic: str = "{}", worker_device: str = '["cuda:0", "cpu"]') -> Path:
    cfg = tmp / "deploy.toml"
    cfg.write_text(
        f"""
data_dir = "{tmp / "data"}"
[hub]
address = "tcp://127.0.0.1:{base}"
keys = "{tmp / "hub-keys"}"
heartbeat = "200ms"
[rooms.kitchen]
[edges.kitchen-pi]
room = "kitchen"
microphone = {mic}
keys = "{tmp / "node-keys"}"
[workers.gpu0]
stages = ["wake"]
device = {worker_device}
keys = "{tmp / "node-keys"}"
"""
    )
    return cfg


def make_keys(tmp: Path) -> None:
    init_hub(tmp / "hub-keys")
    for node in ("kitchen-pi", "gpu0"):
        pub = new_node(tmp / "node-keys", node, tmp / "hub-keys" / "hub.key")
        enrol(tmp / "hub-keys", pub)


def make_gallery(data: Path) -> Path:
    from sensorium.models.gallery import Gallery

    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data / "gallery.sqlite"
    with Gallery(path) as g:
        v = np.random.default_rng(0).standard_normal(256).astype(np.float32)
        g.add("alice", "voice", "test-encoder", v / np.linalg.norm(v))
    return path


@pytest.fixture(scope="module")
def house(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A deployment with keys, a gallery and a running hub process: (folder, config)."""
    tmp = tmp_path_factory.mktemp("house")
    make_keys(tmp)
    make_gallery(tmp / "data")
    cfg = write_config(tmp, free_tcp_base(host="127.0.0.1"))
    hub = subprocess.Popen(
        [sys.executable, "-m", "sensorium", "hub", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = hub.stdout.readline() if hub.stdout else ""
    assert line.startswith("hub:"), line
    yield tmp, cfg
    hub.terminate()
    hub.wait(10)


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings}


@pytest.fixture(scope="module")
def report(house: tuple[Path, Path]) -> list[Finding]:
    return Doctor(load_any(house[1])).run()


@pytest.mark.skipif(HAS_SOUND_CARD or HAS_GPU, reason="this test describes a machine without microphone and GPU")
def test_reports_no_gpu_and_no_microphone_and_passes_the_rest(report: list[Finding]) -> None:
    f = by_check(report)
    mic = f["microphone kitchen-pi"]
    assert mic.status == "FAIL" and "no microphone" in mic.detail and "arecord -l" in mic.fix
    dev = f["device gpu0"]
    assert dev.status == "WARN" and "cuda:0" in dev.detail and "no NVIDIA GPU" in dev.detail
    assert "falls back to cpu" in dev.detail
    assert f["stage wake"].status == "PASS" and "load on cpu" in f["stage wake"].detail
    assert f["hub"].status == "PASS" and "answered in" in f["hub"].detail
    assert f["hub keys"].status == "PASS" and "2 nodes enrolled" in f["hub keys"].detail
    assert f["keys gpu0"].status == f["keys kitchen-pi"].status == "PASS"
    assert f["gallery gallery.sqlite"].status == "PASS" and "1 people" in f["gallery gallery.sqlite"].detail
    for port in [k for k in f if k.startswith("port ")]:
        assert f[port].status == "PASS" and "bound by the running hub" in f[port].detail
    # Nothing else fails or warns: only the two things this machine really lacks.
    bad = {k for k, v in f.items() if v.status in ("FAIL", "WARN")}
    assert bad == {"microphone kitchen-pi", "device gpu0"}, [f[k] for k in bad]


def test_cli_prints_the_list_and_exits_1_on_a_failure(house: tuple[Path, Path]) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "sensorium", "doctor", "--config", str(house[1]), "--name", "kitchen-pi"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == (0 if HAS_SOUND_CARD else 1), res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith(f"sensorium doctor: {house[1]}, kitchen-pi")
    assert any(ln.startswith("PASS  hub ") for ln in lines)
    if not HAS_SOUND_CARD:
        i = next(i for i, ln in enumerate(lines) if ln.startswith("FAIL  microphone kitchen-pi"))
        assert "fix:" in lines[i + 1]
    assert "device gpu0" not in res.stdout, "an edge node is not checked for the worker's GPU"


def test_all_pass_with_a_wav_microphone_and_cpu_placement(house: tuple[Path, Path], tmp_path: Path) -> None:
    """A config this machine can serve (WAV instead of a mic, worker on the CPU) passes: exit 0."""
    cfg = house[1]
    wav = tmp_path / "kitchen.wav"
    wav.write_bytes(b"RIFF")  # existence is what the doctor checks; the edge agent reads it
    text = cfg.read_text().replace("microphone = {}", f'microphone = {{ file = "{wav}" }}')
    text = text.replace('device = ["cuda:0", "cpu"]', 'device = "cpu"')
    cfg2 = tmp_path / "deploy.toml"
    cfg2.write_text(text)
    res = subprocess.run(
        [sys.executable, "-m", "sensorium", "doctor", "--config", str(cfg2), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    findings = json.loads(res.stdout)
    assert res.returncode == 0, [f for f in findings if f["status"] != "PASS"]
    gpu = next(f for f in findings if f["check"] == "gpu gpu0")
    if not HAS_GPU:
        assert gpu["detail"].startswith("no NVIDIA GPU") and "placement uses the CPU" in gpu["detail"]


def test_gpu_only_placement_fails_with_a_fix(house: tuple[Path, Path], tmp_path: Path) -> None:
    if HAS_GPU:
        pytest.skip("this machine has a GPU")
    cfg = tmp_path / "deploy.toml"
    cfg.write_text(house[1].read_text().replace('device = ["cuda:0", "cpu"]', 'device = "cuda:0"'))
    f = by_check(Doctor(load_any(cfg), "gpu0", load_models=False).run())
    assert f["device gpu0"].status == "FAIL"
    assert "none of cuda:0 is usable" in f["device gpu0"].detail
    assert "Proxmox" in f["device gpu0"].fix and '"cpu"' in f["device gpu0"].fix


def test_damage_turns_into_failures_with_fixes(tmp_path: Path) -> None:
    """Secret key readable by others, gallery world-readable, a corrupt SQLite file, a port taken, no hub."""
    make_keys(tmp_path)
    gallery = make_gallery(tmp_path / "data")
    base = free_tcp_base(host="127.0.0.1")
    cfg = write_config(tmp_path, base)
    os.chmod(tmp_path / "node-keys" / "gpu0.key_secret", 0o644)
    os.chmod(gallery, 0o644)
    (tmp_path / "data" / "other.db").write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base + 2))
        squatter.listen()
        f = by_check(Doctor(load_any(cfg), None, hub_timeout=0.5, load_models=False).run())
    assert f["keys gpu0"].status == "FAIL" and "other users can read" in f["keys gpu0"].detail
    assert f["keys gpu0"].fix == f"chmod 600 {tmp_path / 'node-keys' / 'gpu0.key_secret'}"
    assert f["gallery gallery.sqlite"].status == "FAIL" and "chmod 600" in f["gallery gallery.sqlite"].detail
    assert f["gallery other.db"].status == "FAIL"
    assert f[f"port {base + 2}"].status == "FAIL" and "already in use" in f[f"port {base + 2}"].detail
    assert f[f"port {base}"].status == "PASS"
    assert f["hub"].status == "FAIL" and "systemctl start sensorium-hub" in f["hub"].fix
    assert f["stage wake"].status == "SKIP"


def test_torn_event_log_is_reported_not_fatal(tmp_path: Path) -> None:
    """After a power cut the log may end in half a line: a warning (the hub repairs it), not a failure."""
    cfg = write_config(tmp_path, free_tcp_base(host="127.0.0.1"))
    log = tmp_path / "data" / "hub" / "events.jsonl"
    log.parent.mkdir(parents=True)
    log.write_bytes(b'[1,"wake/kitchen/gpu0","{}"]\n[2,"wake/kitchen/gpu0","{}"]\n[3,"wake/kit')
    os.chmod(log, 0o600)
    f = by_check(Doctor(load_any(cfg), "hub", hub_timeout=0.3).run())
    assert f["event log"].status == "WARN" and "torn last line" in f["event log"].detail
    assert "last seq 2" in f["event log"].detail


def test_unknown_node_is_a_usage_error(house: tuple[Path, Path]) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "sensorium", "doctor", "--config", str(house[1]), "--name", "attic-pi"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert "no node named 'attic-pi'" in res.stderr and "kitchen-pi" in res.stderr
