"""What the checks ask the machine: users, ports, sound and video devices, NTP, GPUs (no findings here)."""

from __future__ import annotations

import contextlib
import errno
import glob
import importlib
import importlib.util
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

PORTAUDIO_APT = "libportaudio2"


def _user() -> str:
    with contextlib.suppress(Exception):
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    return str(os.geteuid())


def _host_port(endpoint: str) -> tuple[str, int]:
    rest = endpoint.split("://", 1)[1]
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)


def _connectable(endpoint: str) -> str:
    if endpoint.startswith("tcp://"):
        host, port = _host_port(endpoint)
        if host in ("0.0.0.0", "*", "", "::"):
            return f"tcp://127.0.0.1:{port}"
    return endpoint


def _bind_problem(host: str, port: int) -> str | None:
    """Why binding ``host:port`` fails now, or None if it is free (the socket is closed again)."""
    host = "0.0.0.0" if host in ("*", "") else host
    with contextlib.suppress(socket.gaierror):
        host = socket.gethostbyname(host) if ":" not in host else host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "already in use"
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"{host} is not an address of this machine"
            return str(exc)
    return None


def _snd_nodes(kind: str) -> list[str] | None:
    """ALSA PCM device nodes of a kind ("c" capture, "p" playback); None where there is no ALSA."""
    if not sys.platform.startswith("linux"):
        return None
    return sorted(glob.glob(f"/dev/snd/pcmC*D*{kind}"))


def _capture_hardware() -> list[str] | None:
    return _snd_nodes("c")


def _playback_hardware() -> list[str] | None:
    return _snd_nodes("p")


def _ntp_synchronized() -> bool | None:
    if shutil.which("timedatectl") is None:
        return None
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["timedatectl", "show", "-p", "NTPSynchronized", "--value"], capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0 and out.stdout.strip() in ("yes", "no"):
            return out.stdout.strip() == "yes"
    return None


def _nvidia_smi() -> list[dict[str, str]] | None:
    """GPUs from nvidia-smi (index, name, driver, memory free/total MiB), or None if it is absent/broken."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=index,name,driver_version,memory.free,memory.total",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    rows = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 5:
            rows.append(dict(zip(("index", "name", "driver", "free", "total"), parts, strict=True)))
    return rows


def _gpu_summary() -> str:
    """One line on the GPUs this machine shows (torch and nvidia-smi)."""
    gpus = _nvidia_smi()
    if gpus:
        return "; ".join(
            f"GPU {g['index']} {g['name']}: {int(g['free']) / 1024:.1f} of {int(g['total']) / 1024:.1f} "
            f"GiB free, driver {g['driver']}"
            for g in gpus
        )
    torch_says = ""
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            parts = []
            for i in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(i)
                parts.append(
                    f"GPU {i} {torch.cuda.get_device_name(i)}: {free / 2**30:.1f} of {total / 2**30:.1f} GiB free"
                )
            return "; ".join(parts)
        torch_says = "torch.cuda.is_available() is False"
    else:
        torch_says = "torch not installed"
    smi = "nvidia-smi not found" if shutil.which("nvidia-smi") is None else "nvidia-smi failed (driver not loaded?)"
    nodes = "no /dev/nvidia* device nodes" if not glob.glob("/dev/nvidia*") else "/dev/nvidia* present"
    return f"no NVIDIA GPU: {torch_says}, {smi}, {nodes}"


def _device_problem(device: str) -> str | None:
    """Why ``device`` cannot run stages here, or None: the worker's own test where torch is installed
    (so the doctor predicts exactly the device the worker will pick), nvidia-smi otherwise."""
    if device == "cpu":
        return None
    if importlib.util.find_spec("torch") is not None:
        from sensorium.pipeline.worker import device_problem

        return device_problem(device)
    gpus = _nvidia_smi()
    if not gpus:
        return f"{device}: no NVIDIA GPU (nvidia-smi {'not found' if gpus is None else 'lists none'})"
    return f"{device}: a GPU is present but torch is not installed (pip install 'sensorium[workers]')"


def _is_gallery(path: Path) -> bool:
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db,
    ):
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return {"people", "embeddings", "meta"} <= names
    return False
