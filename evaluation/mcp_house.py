"""A house for the MCP server's ``ask``: the real voice pipeline, edges that play, a microphone someone answers into.

``house`` starts an embedded deployment (stt, speaker ID and tts on the CPU; two rooms whose edges play
answers into WAV files), a real-time microphone stream for the kitchen (``Mic``), joe present in the
kitchen and the MCP server on a free port. ``prepare_voices`` enrols joe's and rob's sample voices and
synthesizes an answer for each; ``answer_after_the_question`` speaks one into the kitchen's microphone
once the question has been played. ``tests/test_mcp_ask.py`` checks the answers with it and
``benchmarks/mcp.py`` times them.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from sensorium.evaluation.ports import free_port
from sensorium.pipeline.bus import Publisher
from sensorium.pipeline.client import Client
from sensorium.pipeline.config import McpConfig
from sensorium.pipeline.messages import AudioChunk, PlaybackStatus, Presence

BLOCK = 1280
RATE = 16000
ANSWERS = {
    "joe": ("Yes please, I would love pasta with tomato sauce for dinner tonight.", "piper:joe"),
    "rob": ("He went out for a walk, he will be back in about an hour.", "flite:rms"),
}
"""What each person answers, and the voice that says it."""


class Mic:
    """A room's microphone stream as an edge sends it: silence, and what someone says when they say it."""

    def __init__(self, pub: Publisher, clock: Any, room: str, node: str) -> None:
        self.pub, self.clock, self.room, self.node = pub, clock, room, node
        self.pending: asyncio.Queue[np.ndarray] = asyncio.Queue()

    async def run(self) -> None:
        t = self.clock.now()
        buf = np.zeros(0, np.int16)
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0.0
        while True:
            if len(buf) < BLOCK:
                buf = np.concatenate(
                    [buf, self.pending.get_nowait() if not self.pending.empty() else np.zeros(BLOCK, np.int16)]
                )
            block, buf = buf[:BLOCK], buf[BLOCK:]
            await self.pub.publish(
                AudioChunk(time=t, room=self.room, source=self.node, rate=RATE, data=block.astype("<i2").tobytes())
            )
            t += BLOCK / RATE
            sent += BLOCK / RATE
            await asyncio.sleep(max(0.0, start + sent - loop.time()))  # real time, like a microphone


def prepare_voices(folder: Path, cache: Path = Path(".cache")) -> dict[str, Any]:
    """joe's and rob's sample voices enrolled in ``folder``/gallery.db, and the answer each speaks (16 kHz int16).

    ``cache`` holds the sample's enrolment recordings (``sample/``) and the synthesized answers (``media/``).
    """
    from sensorium.evaluation.demo import enroll_pairs
    from sensorium.evaluation.media import speech
    from sensorium.evaluation.session import sample_enrollment

    gallery = folder / "gallery.db"
    people = {p: k for p, k in sample_enrollment(cache / "sample").items() if p in ANSWERS}
    if enroll_pairs([f"{p}={w}" for p, k in people.items() for w in k["voice"]], gallery) != 0:
        raise RuntimeError(f"enrolling {', '.join(people)} into {gallery} failed (see the log above)")
    media = cache / "media"
    media.mkdir(parents=True, exist_ok=True)
    return {"gallery": gallery, **{p: speech(text, voice, media) for p, (text, voice) in ANSWERS.items()}}


@contextlib.asynccontextmanager
async def house(folder: Path, gallery: Path) -> AsyncIterator[tuple[Any, Mic, str]]:
    """The running house: (the embedded deployment, the kitchen's ``Mic``, the MCP server's streamable-HTTP URL)."""
    from sensorium.bridges.mcp.server import SensoriumMcp
    from sensorium.deployment import deployment_from_dict
    from sensorium.edge.agent import EdgeAgent
    from sensorium.embedded import embedded

    data = folder / "data"
    data.mkdir()
    shutil.copy(gallery, data / "gallery.db")
    dep = deployment_from_dict(
        {
            "data_dir": str(data),
            "hub": {"heartbeat": "250ms"},
            "rooms": {"kitchen": {}, "living_room": {}},
            "edges": {
                "kitchen-pi": {"room": "kitchen", "playback": {"wav_dir": str(folder / "tts"), "rate": 22050}},
                "living-pi": {"room": "living_room", "playback": {"wav_dir": str(folder / "tts"), "rate": 22050}},
            },
            "workers": {"local": {"stages": ["stt", "speaker", "tts"]}},
            "stages": {"tts": {"backend": "flite"}},
        }
    )
    async with embedded(dep) as env:
        pub = Publisher(env.endpoints)
        edges = [EdgeAgent(dep, n, hub_address=env.address, clock=env.clock) for n in dep.edges]
        tasks = [asyncio.create_task(e.run()) for e in edges]
        mic = Mic(pub, env.clock, "kitchen", "kitchen-pi")
        tasks.append(asyncio.create_task(mic.run()))
        await asyncio.sleep(0.5)
        await pub.publish(
            Presence(time=env.clock.now(), room="kitchen", source="presence", person="joe", state="entered")
        )
        config = McpConfig(port=free_port(), ask_timeout="20s")
        mics = {"kitchen": ["kitchen-pi"], "living_room": ["living-pi"]}
        server = SensoriumMcp(
            config, list(dep.rooms), env.endpoints, microphones=mics,
            people=lambda: ["joe", "rob", "sara"], heartbeat=0.25, clock=env.clock,
        )  # fmt: skip
        async with server.connected():
            started = asyncio.Event()
            http = asyncio.create_task(server.serve_http(config.host, config.port, started))
            try:
                await started.wait()
                if not await server.wait_ready(10):
                    raise RuntimeError("the MCP server did not catch up with the hub within 10 s")
                yield env, mic, f"http://127.0.0.1:{config.port}/mcp"
            finally:
                http.cancel()
                for e in edges:
                    with contextlib.suppress(Exception):
                        await e.stop()
                for t in tasks:
                    t.cancel()
                await asyncio.gather(http, *tasks, return_exceptions=True)
                pub.close()


async def answer_after_the_question(env: Any, mic: Mic, pcm: np.ndarray) -> float:
    """Whoever answers speaks 0.4 s after the question has been played in the kitchen; returns when they start
    (``time.perf_counter``)."""
    async with Client(env.endpoints, clock=env.clock) as c:
        async for ev in c.events(["playback"], rooms=["kitchen"]):
            if isinstance(ev, PlaybackStatus) and ev.state == "ended":
                await asyncio.sleep(0.4)
                await mic.pending.put(pcm.astype(np.int16))
                return time.perf_counter()
        raise RuntimeError("the hub's event stream ended before the question was played")
