"""A worker process is SIGKILLed and restarted while audio streams; a restarted subscriber misses nothing.

Real parts: the `sensorium worker` command in its own process with the real wake-word stage, the
hub, a publisher streaming synthesized "hey jarvis" audio in real time, and the client API.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import media
import numpy as np
import pytest

from sensorium.pipeline.bus import Publisher
from sensorium.pipeline.client import Client, collect
from sensorium.pipeline.hub import Hub
from sensorium.pipeline.messages import AudioChunk, Event, NodeStatus, WakeDetected

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def _config(tmp: Path, address: str) -> Path:
    cfg = tmp / "deploy.toml"
    cfg.write_text(
        f'data_dir = "{tmp}/data"\n[hub]\naddress = "{address}"\nheartbeat = "100ms"\ndown_after = "500ms"\n'
        '[rooms.kitchen]\n[edges.kitchen-pi]\nroom = "kitchen"\n'
        '[workers.gpu0]\nstages = ["wake"]\ndevice = ["cuda:0", "cpu"]\n'
        '[stages.wake]\nbudget = "2s"\nrefractory = "1s"\n'
    )
    return cfg


def _start_worker(cfg: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "sensorium", "worker", "--config", str(cfg), "--name", "gpu0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def _stream(pub: Publisher, clock: object, pcm: np.ndarray, stop: asyncio.Event) -> None:
    """Loop the utterance in real time, 80 ms chunks, as an edge node would."""
    block = 1280
    while not stop.is_set():
        for i in range(0, len(pcm) - block + 1, block):
            if stop.is_set():
                return
            await pub.publish(
                AudioChunk(room="kitchen", source="kitchen-pi", time=clock.now(), data=pcm[i : i + block].tobytes())  # type: ignore[attr-defined]
            )
            await asyncio.sleep(0.08)


async def _wait_status(events: list[Event], node: str, state: str, timeout: float) -> NodeStatus:
    for _ in range(int(timeout / 0.05)):
        for e in events:
            if isinstance(e, NodeStatus) and e.node == node and e.state == state:
                return e
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {state!r} status for {node} within {timeout}s; saw {events}")


async def test_worker_killed_and_restarted_subscriber_misses_nothing(hub: Hub, hub_address: str, tmp_path: Path):
    pcm = media.concat(media.speech("hey jarvis", "piper:joe"), 1.2)
    cfg = _config(tmp_path, hub_address)
    pub = Publisher(hub.endpoints)
    stop = asyncio.Event()
    seen: list[Event] = []

    async def subscribe(client: Client, since: int | None) -> None:
        async for ev in client.events(["wake", "node_status"], since=since):
            seen.append(ev)

    worker = _start_worker(cfg)
    streamer = None
    try:
        async with Client(hub.endpoints, name="agent") as client:
            sub = asyncio.create_task(subscribe(client, 0))
            await _wait_status(seen, "gpu0", "up", 60)
            streamer = asyncio.create_task(_stream(pub, hub.clock, pcm, stop))
            for _ in range(600):
                if sum(isinstance(e, WakeDetected) for e in seen) >= 2:
                    break
                await asyncio.sleep(0.05)
            assert sum(isinstance(e, WakeDetected) for e in seen) >= 2, "wake stage heard nothing"
            sub.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sub
            last = client.last_seq
        before = list(seen)

        # the subscriber is gone; the worker dies hard, then comes back, while audio keeps streaming
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        await asyncio.sleep(1.5)
        assert any(e.node == "gpu0" and e.state == "down" for e in _log_events(hub, last)), "hub did not see it die"
        worker = _start_worker(cfg)
        for _ in range(1200):
            after = _log_events(hub, last)
            ups = [i for i, e in enumerate(after) if isinstance(e, NodeStatus) and e.state == "up"]
            if ups and any(isinstance(e, WakeDetected) for e in after[ups[-1] :]):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("restarted worker produced no wake events")

        # the subscriber restarts from its last sequence number and gets every missed event once
        seen.clear()
        async with Client(hub.endpoints, name="agent") as client:
            missed = _log_events(hub, last)
            got = await collect(client.events(["wake", "node_status"], since=last), len(missed), 15)
        assert [e.seq for e in got] == [e.seq for e in missed]
        assert len({e.seq for e in got}) == len(got)
        assert all(e.seq > last for e in got)
        assert not ({e.seq for e in before} & {e.seq for e in got})
        states = [e.state for e in got if isinstance(e, NodeStatus) and e.node == "gpu0"]
        assert states[:2] == ["down", "up"]
        assert any(isinstance(e, WakeDetected) and e.word == "hey_jarvis" for e in got)
    finally:
        stop.set()
        if streamer is not None:
            await asyncio.gather(streamer, return_exceptions=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        pub.close()


def _log_events(hub: Hub, since: int) -> list[Event]:
    from sensorium.pipeline.codec import from_json

    prefixes = ("wake/", "node_status/")
    return [from_json(e.json) for e in hub.log.since(since, prefixes)]  # type: ignore[misc]
