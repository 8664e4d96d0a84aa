"""Checks of a worker: its devices, each placed stage's libraries and models, the galleries."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import sqlite3
import stat
import time
from typing import Any

from sensorium.cli.doctor.context import Checkup
from sensorium.cli.doctor.findings import Checks, Finding
from sensorium.cli.doctor.probes import (
    _device_problem,
    _gpu_summary,
    _is_gallery,
)
from sensorium.pipeline.config import WorkerConfig


def check_worker(dr: Checkup, name: str, worker: WorkerConfig) -> Checks:
    device = yield from check_devices(dr, name, worker)
    if device is None:
        return
    for sname in worker.runs():
        yield from check_stage(dr, name, sname, device)


def check_devices(dr: Checkup, name: str, worker: WorkerConfig) -> Checks:
    """Check each listed device in order; returns the one the worker will use (or None)."""
    devices = worker.devices()
    problems: list[str] = []
    chosen = None
    for dev in devices:
        why = _device_problem(dev)
        if why is None:
            chosen = dev
            break
        problems.append(why)
    gpu_line = _gpu_summary()
    if chosen is None:
        yield Finding(
            "FAIL",
            f"device {name}",
            f"none of {', '.join(devices)} is usable: " + "; ".join(problems) + f" [{gpu_line}]",
            "pass the GPU through (docs/deploy.md, Proxmox LXC), check 'nvidia-smi', or add \"cpu\" to "
            f"[workers.{name}] device as a fallback",
        )
    elif problems:
        yield Finding(
            "WARN",
            f"device {name}",
            "; ".join(problems) + f" [{gpu_line}] — falls back to {chosen} "
            "(the worker reports it with a degraded NodeStatus)",
            "fine for a CPU box; otherwise pass the GPU through (docs/deploy.md) and check 'nvidia-smi'",
        )
    else:
        yield Finding("PASS", f"device {name}", f"runs on {chosen}" + (f" [{gpu_line}]" if chosen != "cpu" else ""))
    if not any(d.startswith("cuda") for d in devices):
        # Say what the machine has even when the placement asks for no GPU.
        yield Finding(
            "PASS" if "no NVIDIA GPU" in gpu_line else "WARN",
            f"gpu {name}",
            gpu_line + " (placement uses the CPU)",
            "" if "no NVIDIA GPU" in gpu_line else f'put "cuda:0" first in [workers.{name}] device to use it',
        )
    return chosen


def check_stage(dr: Checkup, worker: str, sname: str, device: str) -> Checks:
    check = f"stage {sname}"
    from sensorium.registry import STAGES, stage_class

    if sname not in STAGES:
        return
    try:
        cls = stage_class(sname)
    except ImportError as exc:
        yield Finding("FAIL", check, f"not installed: {exc}", "pip install 'sensorium[workers]'")
        return
    for lib in cls.libraries:
        if importlib.util.find_spec(lib.module) is None:
            yield Finding("FAIL", check, f"{lib.module} is not installed", f"install {lib.install}")
            return
    if not dr.load_models:
        yield Finding("SKIP", check, "model loading skipped (--no-models)")
        return
    from sensorium.pipeline.stage import StageContext

    emitted: list[Any] = []

    async def _emit(msg: Any) -> None:
        emitted.append(msg)

    ctx = StageContext.placed(dr.deployment, sname, worker=f"doctor-{worker}", device=device, emit=_emit)
    stage = cls(ctx)

    async def _load() -> float:
        async with asyncio.timeout(300):
            t0 = time.monotonic()
            await stage.start()
            took = time.monotonic() - t0
            await stage.stop()
            return took

    try:
        took = asyncio.run(_load())
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        fix = f"check the model options in [stages.{sname}] (name or local path) and that the files exist"
        if "out of memory" in text.lower():
            fix = "free GPU memory (nvidia-smi shows who holds it) or place this stage on another device"
        yield Finding("FAIL", check, f"models do not load on {device}: {text[:300]}", fix)
        return
    finally:
        ctx.close()
    yield Finding("PASS", check, f"models load on {device} in {took:.1f} s")


def check_galleries(dr: Checkup) -> Checks:
    d = dr.deployment.data_dir.expanduser()
    files = sorted({*d.glob("*.sqlite"), *d.glob("*.db"), *d.glob("**/gallery*.sqlite")}) if d.is_dir() else []
    from sensorium.enrollment import enroll_command

    if not files:
        how = enroll_command("both", config=dr.deployment.path)
        yield Finding("PASS", "gallery", f"no gallery in {d} yet (enrol people with '{how}')")
        return
    for path in files:
        check = f"gallery {path.name}"
        try:
            gallery_mod = importlib.import_module("sensorium.models.gallery")
        except ImportError:
            gallery_mod = None
        try:
            if gallery_mod is not None and _is_gallery(path):
                g = gallery_mod.Gallery(path)
                try:
                    g.check()
                    people = len(g.people())
                finally:
                    g.close()
                how = "" if people else f" (enrol: {enroll_command('both', config=dr.deployment.path)})"
                yield Finding("PASS", check, f"{path}: integrity ok, mode 0600, {people} people enrolled{how}")
                continue
            mode = stat.S_IMODE(path.stat().st_mode)
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                ok = db.execute("PRAGMA integrity_check").fetchone()[0]
            if ok != "ok":
                yield Finding(
                    "FAIL",
                    check,
                    f"{path}: SQLite integrity check failed: {ok}",
                    "restore it from a backup, or move it away and enrol again",
                )
            elif mode & 0o077:
                yield Finding("FAIL", check, f"{path}: mode {oct(mode)} lets other users read it", f"chmod 600 {path}")
            else:
                yield Finding("PASS", check, f"{path}: SQLite integrity ok, mode {oct(mode)}")
        except Exception as exc:
            yield Finding(
                "FAIL",
                check,
                str(exc)[:400],
                "follow the message; a damaged file: restore a backup or move it away and enrol again",
            )
