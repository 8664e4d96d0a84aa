"""The MCP server while the bundled sample session replays through the whole pipeline in real time.

Every stage on the CPU (wake, arbiter, stt, speaker, detect, face, presence), the sample's media
replayed at speed 1 (two rooms; joe, sara and rob speak, tom_hanks is on the living room's camera),
the MCP server following the hub. The SDK's client calls the tools during and after the replay and
subscribes to tom_hanks: the answers are checked against the session's labels, and against the
pipeline's own events (what the server says is exactly what the hub logged).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from mcp import types
from pydantic import AnyUrl
from test_mcp_server import call, session

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _words(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c == " " else " " for c in text.lower()).split()


async def test_tools_answer_from_the_replayed_sample_session(tmp_path: Path) -> None:
    import jiwer

    from sensorium.bridges.mcp.server import SensoriumMcp
    from sensorium.bridging import gallery_people
    from sensorium.embedded import embedded
    from sensorium.evaluation.ports import free_port
    from sensorium.evaluation.replay import ReplayOptions, load, replay_embedded
    from sensorium.evaluation.sample import prepare, sample_deployment
    from sensorium.evaluation.session import PeopleLabel, SpeechLabel
    from sensorium.pipeline.client import Client
    from sensorium.pipeline.config import McpConfig
    from sensorium.pipeline.messages import SpeakerIdentified, Transcript

    session_file = prepare(tmp_path, ROOT / ".cache" / "sample")
    replayed = load([session_file])
    dep = sample_deployment(replayed.rooms, tmp_path)
    people = gallery_people(tmp_path / "gallery.db")()
    updates: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ResourceUpdatedNotification
        ):
            updates.append(str(message.root.params.uri))

    async with embedded(dep) as env:
        config = McpConfig(port=free_port())
        server = SensoriumMcp(config, list(replayed.rooms), env.endpoints, people=lambda: people,
                              heartbeat=0.25, clock=env.clock)  # fmt: skip
        async with server.connected():
            started = asyncio.Event()
            http = asyncio.create_task(server.serve_http(config.host, config.port, started))
            await started.wait()
            assert await server.wait_ready(10)
            async with session(f"http://127.0.0.1:{config.port}", message_handler=on_message) as s:
                await s.subscribe_resource(AnyUrl("sensorium://person/tom_hanks"))
                replay = asyncio.create_task(replay_embedded(replayed, ReplayOptions(speed=1, settle=4.0), env))
                seen_home: list[dict[str, Any]] = []
                while not replay.done():  # an agent asking while the house goes on
                    seen_home.append(await call(s, "who_is_home"))
                    await asyncio.sleep(1.0)
                await replay
                await asyncio.sleep(2.0)
                said = (await call(s, "recent_transcripts", limit=50))["transcripts"]
                tom = await call(s, "last_seen", person="tom_hanks")
            http.cancel()
            await asyncio.gather(http, return_exceptions=True)
        async with Client(env.endpoints, clock=env.clock) as c:
            backlog = await c.backlog(0, ["transcript", "speaker"])
    logged = [e for e in backlog if isinstance(e, Transcript) and e.final]
    # the speaker of an utterance: on its final transcript, or in its speaker event when that came later
    speaker_of = {e.utterance_id: e.person for e in backlog if isinstance(e, SpeakerIdentified)}

    # tom_hanks is on the living room's camera for the first half: the agent saw him there, was told when
    # he came (and left), and last_seen says where the camera saw him
    labelled = [lb for lb in replayed.labels if isinstance(lb, PeopleLabel) and "tom_hanks" in lb.people]
    assert {lb.room for lb in labelled} == {"living_room"}
    assert any(p == {"person": "tom_hanks", "room": "living_room"} for h in seen_home
               for p in ({"person": q["person"], "room": q["room"]} for q in h["people"])), seen_home  # fmt: skip
    assert "sensorium://person/tom_hanks" in updates
    assert tom["last_seen_room"] == "living_room" and tom["seen_by"] in ("face", "presence")

    # what was said: exactly what the pipeline logged (room, speaker, text, in order) ...
    pipeline_said = [
        (e.room, e.speaker or speaker_of.get(e.utterance_id, "unknown"), e.text.strip())
        for e in logged
        if e.text.strip()
    ]
    assert [(u["room"], u["speaker"], u["text"]) for u in said] == pipeline_said
    # ... and that is the session's commands, in their rooms, by their speakers
    commands = [lb for lb in replayed.labels if isinstance(lb, SpeechLabel) and lb.wake]
    matched = 0
    for lb in commands:
        for u in said:
            if u["room"] == lb.room and u["speaker"] == lb.speaker:
                if jiwer.wer(" ".join(_words(lb.text)), " ".join(_words(u["text"]))) <= 0.25:
                    matched += 1
                    break
    print(json.dumps({"said": said, "commands": [(lb.room, lb.speaker, lb.text) for lb in commands]}, indent=1))
    assert len(commands) == 6 and matched >= 5, (matched, said)
