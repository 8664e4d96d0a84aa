"""Workers: placement-driven device choice with a clear fail-soft fallback, stats for `top`."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import msgspec
import pytest

from sensorium.pipeline.bus import Publisher, Subscriber
from sensorium.pipeline.config import from_dict
from sensorium.pipeline.hub import Hub
from sensorium.pipeline.messages import AudioChunk, Message, NodeStatus, StageStats, WakeDetected
from sensorium.pipeline.stage import Stage
from sensorium.pipeline.worker import DeviceUnavailable, Worker, device_problem


class Loudness(Stage):
    """A cheap real stage: reports chunks louder than a threshold."""

    class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        threshold: int = 1000

    name = "loud"
    consumes: ClassVar[tuple[type[Message], ...]] = (AudioChunk,)

    async def start(self) -> None:
        self.device_seen = self.ctx.device

    async def handle(self, msg: Message) -> None:
        import numpy as np

        assert isinstance(msg, AudioChunk)
        peak = int(np.abs(np.frombuffer(msg.data, "<i2")).max(initial=0))
        if peak > self.ctx.options.threshold:
            await self.ctx.publish(WakeDetected(room=msg.room, time=msg.time, word="loud", score=peak / 32768))


def _deployment(address: str, device: list[str]):
    raw = {
        "hub": {"address": address, "heartbeat": "100ms"},
        "rooms": {"kitchen": {}},
        "edges": {"pi": {"room": "kitchen"}},
        "workers": {"w": {"stages": ["loud"], "device": device}},
    }
    return from_dict(raw, {"loud": Loudness.Options}, {"loud": 0.5}, "test.toml")


def test_device_problems_are_explained() -> None:
    assert device_problem("cpu") is None
    why = device_problem("cuda:3")
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        assert why is not None and "cuda:3" in why


async def test_missing_gpu_falls_back_to_cpu_and_says_so(hub: Hub, hub_address: str) -> None:
    if device_problem("cuda:0") is None:
        pytest.skip("this machine has a GPU; the fallback path needs one missing")
    sub = Subscriber(hub.endpoints, ["node_status/", "wake/", "stats/"])
    await asyncio.sleep(0.1)
    w = Worker(
        _deployment(hub_address, ["cuda:0", "cpu"]),
        "w",
        {"loud": Loudness},
        endpoints=hub.endpoints,
        stats_interval=0.2,
    )
    await w.start()
    try:
        assert w.device == "cpu"
        statuses: list[NodeStatus] = []
        stats: list[StageStats] = []
        pub = Publisher(hub.endpoints)
        await asyncio.sleep(0.3)
        await pub.publish(AudioChunk(room="kitchen", source="pi", time=hub.clock.now(), data=b"\xff\x7f" * 160))
        got_wake = False
        for _ in range(60):
            m = await sub.recv_timeout(0.1)
            if isinstance(m, NodeStatus):
                statuses.append(m)
            elif isinstance(m, StageStats):
                stats.append(m)
            elif isinstance(m, WakeDetected):
                got_wake = True
            if got_wake and stats and stats[-1].inputs and any(s.state == "degraded" for s in statuses):
                break
        degraded = [s for s in statuses if s.node == "w" and s.state == "degraded"]
        assert degraded and "cuda:0" in degraded[0].detail and "running on cpu" in degraded[0].detail
        assert got_wake
        assert stats[-1].stage == "loud" and stats[-1].device == "cpu" and stats[-1].inputs >= 1
        pub.close()
    finally:
        await w.stop()
        sub.close()


async def test_no_usable_device_is_a_clear_error(hub: Hub, hub_address: str) -> None:
    if device_problem("cuda:0") is None:
        pytest.skip("this machine has a GPU")
    w = Worker(_deployment(hub_address, ["cuda:0"]), "w", {"loud": Loudness}, endpoints=hub.endpoints)
    with pytest.raises(DeviceUnavailable, match=r"worker w: no usable device: cuda:0 requested but"):
        await w.start()
    await w.stop()
