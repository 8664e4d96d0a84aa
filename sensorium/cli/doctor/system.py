"""Checks every node shares: Python, the deployment file and its graph, the data folder, the clock, the units."""

from __future__ import annotations

import os
import platform
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

from sensorium.cli.doctor.context import Checkup
from sensorium.cli.doctor.findings import Checks, Finding, Status
from sensorium.cli.doctor.probes import (
    _ntp_synchronized,
    _user,
)

MIN_FREE_DISK = 1 << 30


def check_system(dr: Checkup) -> Checks:
    py = sys.version_info
    status: Status = "PASS" if py >= (3, 11) else "FAIL"
    yield Finding(
        status,
        "python",
        f"Python {py.major}.{py.minor}.{py.micro} on {platform.system()} {platform.machine()}",
        "" if status == "PASS" else "install Python >= 3.11 (Raspberry Pi OS Bookworm / Debian 12 have it)",
    )


def check_config(dr: Checkup, workers: list[str]) -> Checks:
    dep = dr.deployment
    yield Finding(
        "PASS",
        "config",
        f"{dep.path}: valid ({len(dep.rooms)} rooms, {len(dep.edges)} edge nodes, {len(dep.workers)} workers)",
    )
    from sensorium.registry import STAGES, stage_class

    for wname in workers:
        for sname in dep.workers[wname].runs():
            if sname not in STAGES:
                continue
            try:
                stage_class(sname)
            except ImportError as exc:
                yield Finding(
                    "FAIL",
                    f"stage {sname}",
                    f"worker {wname} runs {sname} but its code does not import: {exc}",
                    "install the worker libraries: pip install 'sensorium[workers]'",
                )


def check_graph(dr: Checkup) -> Checks:
    from sensorium.graph import check

    issues = check(dr.deployment)
    for issue in issues:
        yield Finding(
            "FAIL" if issue.level == "error" else "WARN",
            f"graph {issue.stage}",
            issue.text,
            "see it all with: sensorium graph --config " + str(dr.deployment.path),
        )
    if not issues:
        yield Finding("PASS", "graph", "every consumed message type has a producer, every stream a consumer")


def check_data_dir(dr: Checkup) -> Checks:
    d = dr.deployment.data_dir.expanduser()
    if not d.exists():
        parent = next((p for p in d.absolute().parents if p.exists()), Path("/"))
        ok = os.access(parent, os.W_OK)
        yield Finding(
            "WARN" if ok else "FAIL",
            "data dir",
            f"{d} does not exist yet" + ("; it will be created on first start" if ok else f"; {parent} not writable"),
            f"create it private: install -d -m 0700 -o sensorium {d}",
        )
        return
    mode = stat.S_IMODE(d.stat().st_mode)
    free = shutil.disk_usage(d).free
    problems = []
    if not os.access(d, os.W_OK):
        problems.append(f"not writable by {_user()}")
    if mode & 0o077:
        problems.append(f"mode {oct(mode)} lets other users in (galleries hold biometric data)")
    if problems:
        yield Finding(
            "FAIL" if "writable" in problems[0] else "WARN",
            "data dir",
            f"{d}: " + "; ".join(problems),
            f"chown -R sensorium {d} && chmod 700 {d}",
        )
    elif free < MIN_FREE_DISK:
        yield Finding("WARN", "data dir", f"{d}: only {free / 2**20:.0f} MiB free", "free some disk space")
    else:
        yield Finding("PASS", "data dir", f"{d}: writable, mode {oct(mode)}, {free / 2**30:.1f} GiB free")


def check_clock(dr: Checkup) -> Checks:
    reply = dr.probe[1] if dr.probe is not None else None
    hub_time = getattr(reply, "time", 0.0) if reply is not None else 0.0
    if hub_time:
        offset = hub_time - time.time()
        status: Status = "PASS" if abs(offset) < 0.1 else "WARN"
        yield Finding(
            status,
            "clock",
            f"this machine's clock is {offset * 1000:+.0f} ms from the hub's",
            ""
            if status == "PASS"
            else "event times stay right (nodes sync to the hub), but enable NTP: timedatectl set-ntp true",
        )
        return
    synced = _ntp_synchronized()
    if synced is None:
        yield Finding(
            "SKIP",
            "clock",
            "cannot tell whether the clock is NTP-synchronized (no timedatectl here); "
            "nodes measure their offset to the hub from heartbeats",
        )
    elif synced:
        yield Finding("PASS", "clock", "NTP-synchronized (timedatectl)")
    else:
        yield Finding(
            "WARN",
            "clock",
            "the clock is not NTP-synchronized",
            "timedatectl set-ntp true (a Pi has no RTC: without NTP its clock restarts wrong after a power cut)",
        )


def check_services(dr: Checkup) -> Checks:
    """The node's systemd units are enabled, so they come back by themselves after a power cut."""
    hub, workers, edges = dr.roles()
    units = (["sensorium-hub.service"] if hub else []) + [f"sensorium-worker@{w}.service" for w in workers]
    units += ["sensorium-edge.service"] if edges else []
    if not Path("/run/systemd/system").is_dir() or shutil.which("systemctl") is None:
        yield Finding("SKIP", "services", f"systemd is not running here; {', '.join(units)} not checked")
        return
    for unit in units:
        res = subprocess.run(["systemctl", "is-enabled", unit], capture_output=True, text=True, timeout=10)
        state = res.stdout.strip() or res.stderr.strip()
        if state == "enabled":
            yield Finding("PASS", f"unit {unit}", "enabled: starts at boot and after a power cut")
        else:
            yield Finding(
                "WARN",
                f"unit {unit}",
                f"{state or 'not installed'}: it will not start after a power cut",
                f"systemctl enable --now {unit} (installed by deploy/install-*.sh)",
            )
