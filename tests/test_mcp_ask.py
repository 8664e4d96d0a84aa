"""``ask`` through the real pipeline: the question is synthesized (tts) and played by the room's edge,
the person's synthesized spoken answer reaches the room's microphone stream afterwards, speech-to-text
and speaker ID (enrolled voices) turn it into the answer the MCP client gets, over streamable HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

from evaluation.ports import free_port
from pipeline.bus import Publisher
from pipeline.config import McpConfig
from pipeline.messages import AudioChunk, PlaybackStatus, Presence

pytestmark = pytest.mark.slow
BLOCK = 1280
RATE = 16000


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


def prepare_voices(folder: Path) -> dict[str, Any]:
    """joe's and rob's voices enrolled in ``folder``/gallery.db, and an answer each speaks (synthesized)."""
    import media

    from evaluation.demo import enroll_pairs
    from evaluation.session import sample_enrollment

    gallery = folder / "gallery.db"
    people = {p: k for p, k in sample_enrollment(Path(".cache/sample")).items() if p in ("joe", "rob")}
    assert enroll_pairs([f"{p}={w}" for p, k in people.items() for w in k["voice"]], gallery) == 0
    return {
        "gallery": gallery,
        "joe": media.speech("Yes please, I would love pasta with tomato sauce for dinner tonight.", "piper:joe"),
        "rob": media.speech("He went out for a walk, he will be back in about an hour.", "flite:rms"),
    }


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return prepare_voices(tmp_path_factory.mktemp("gallery"))


@contextlib.asynccontextmanager
async def house(tmp_path: Path, gallery: Path) -> AsyncIterator[Any]:
    import shutil

    from bridges.mcp.server import SensoriumMcp
    from edge.agent import EdgeAgent
    from sensorium.deployment import deployment_from_dict
    from sensorium.embedded import embedded

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(gallery, data / "gallery.db")
    dep = deployment_from_dict(
        {
            "data_dir": str(data),
            "hub": {"heartbeat": "250ms"},
            "rooms": {"kitchen": {}, "living_room": {}},
            "edges": {
                "kitchen-pi": {"room": "kitchen", "playback": {"wav_dir": str(tmp_path / "tts"), "rate": 22050}},
                "living-pi": {"room": "living_room", "playback": {"wav_dir": str(tmp_path / "tts"), "rate": 22050}},
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
            await started.wait()
            assert await server.wait_ready(10)
            try:
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
    """Whoever answers speaks once the question has been played in the kitchen; returns when they start
    (``time.perf_counter``)."""
    from pipeline.client import Client

    async with Client(env.endpoints, clock=env.clock) as c:
        async for ev in c.events(["playback"], rooms=["kitchen"]):
            if isinstance(ev, PlaybackStatus) and ev.state == "ended":
                await asyncio.sleep(0.4)
                await mic.pending.put(pcm.astype(np.int16))
                return time.perf_counter()
        raise AssertionError("the event stream ended")


async def test_ask_gets_the_spoken_answer_and_who_gave_it(tmp_path: Path, voices: dict[str, Any]) -> None:
    async with house(tmp_path, voices["gallery"]) as (env, mic, url):
        async with (
            streamablehttp_client(url) as (read, write, _),
            ClientSession(read, write, read_timeout_seconds=timedelta(seconds=90)) as s,
        ):
            await s.initialize()
            answering = asyncio.create_task(answer_after_the_question(env, mic, voices["joe"]))
            r = await s.call_tool("ask", {"person": "joe", "question": "Would you like pasta for dinner?"})
            await answering
            got = r.structuredContent
            assert not r.isError and got is not None, r.content
            print("ask joe:", got)
            assert (got["status"], got["speaker"], got["room"]) == ("answered", "joe", "kitchen"), got
            assert "pasta" in got["answer"].lower(), got

            answering = asyncio.create_task(answer_after_the_question(env, mic, voices["rob"]))
            r = await s.call_tool("ask", {"person": "joe", "question": "Are you still there?"})
            await answering
            got = r.structuredContent
            print("ask joe, rob answers:", got)
            assert got is not None and (got["status"], got["speaker"]) == ("someone_else", "rob"), got
            assert "walk" in got["answer"].lower(), got

            r = await s.call_tool("ask", {"person": "joe", "question": "Hello?", "timeout": 8})
            got = r.structuredContent
            assert got is not None and (got["status"], got["answer"]) == ("no_answer", ""), got

            r = await s.call_tool("ask", {"person": "sara", "question": "Hello?"})
            got = r.structuredContent
            assert got is not None and (got["status"], got["room"]) == ("not_home", None), got
