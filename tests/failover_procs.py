"""Helpers for failover tests and the takeover benchmark: a hub with placement, `sensorium worker`
processes, real-time audio and camera streams, and waits on what the hub logged."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sensorium.deployment import load_deployment, placement_specs
from sensorium.pipeline.bus import Publisher
from sensorium.pipeline.codec import from_json
from sensorium.pipeline.hub import Hub
from sensorium.pipeline.messages import AudioChunk, Event, VideoFrame

ROOT = Path(__file__).resolve().parent.parent


def make_hub(cfg: Path, state: Path) -> Hub:
    """The hub of deployment ``cfg`` with its placement, as ``sensorium hub`` builds it."""
    dep = load_deployment(cfg)
    return Hub(dep.hub, state_dir=state, placement=placement_specs(dep))


def start_worker(cfg: Path, name: str, logs: Path) -> subprocess.Popen[bytes]:
    """``sensorium worker --name NAME`` in its own process group; output to ``logs/NAME.log``."""
    logs.mkdir(parents=True, exist_ok=True)
    out = open(logs / f"{name}.log", "ab")  # the child process writes it
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "sensorium", "-v", "worker", "--config", str(cfg), "--name", name],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        out.close()


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker's process group and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def logged(hub: Hub, since: int = 0, prefixes: tuple[str, ...] = ()) -> list[Event]:
    """Events in the hub's log after ``since``."""
    return [from_json(e.json) for e in hub.log.since(since, prefixes, max_events=10**6)]  # type: ignore[misc]


async def wait_for(check: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``check`` until it returns something true; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


async def stream_audio(
    pub: Publisher, clock: object, room: str, source: str, pcm: np.ndarray, stop: asyncio.Event, loop: bool = False
) -> None:
    """Publish ``pcm`` in 80 ms chunks in real time, as an edge node would (then silence until stopped)."""
    block = 1280
    t = clock.now()  # type: ignore[attr-defined]
    t_wall = time.monotonic()
    i = 0
    silence = np.zeros(block, np.int16)
    while not stop.is_set():
        if i + block <= len(pcm):
            data = pcm[i : i + block]
            i += block
        else:
            data = silence
            if loop:
                i = 0
        await pub.publish(AudioChunk(room=room, source=source, time=t, data=data.tobytes()))
        t += block / 16000
        t_wall += block / 16000
        await asyncio.sleep(max(0.0, t_wall - time.monotonic()))


async def stream_cameras(
    pub: Publisher, clock: object, room: str, cameras: list[str], jpeg: bytes, fps: float, stop: asyncio.Event
) -> None:
    """Publish the same JPEG for every camera at ``fps``."""
    while not stop.is_set():
        for cam in cameras:
            await pub.publish(
                VideoFrame(room=room, source=cam, time=clock.now(), width=810, height=1080, data=jpeg)  # type: ignore[attr-defined]
            )
        await asyncio.sleep(1 / fps)
