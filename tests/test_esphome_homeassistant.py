"""Home Assistant 2025.4.4 itself as the client of ``sensorium esphome``'s room devices.

Each room's device is added through HA's esphome config flow with the site's Noise key, as a user does;
HA's Assist pipeline is sensorium's (its Wyoming STT, conversation agent and TTS). Then HA's own
services drive the devices: ``assist_satellite.announce`` is heard on the kitchen's edge (our STT reads
it back), and the guide's automation (alice enters the kitchen → ``start_conversation``) plays its
prompt in the kitchen, after which the next command, spoken without a wake word, is answered there;
HA's pipeline gets it with the enrolled speaker in front ("[joe] what time is it", ``speaker_prefix``);
the kitchen's media player exists, and a volume set in HA makes the edge play the next announcement
at that gain; a timer set by voice through HA's own agent finishes and its line is heard in the kitchen.

The kitchen's microphone is the test itself (it publishes the command's audio on the bus as the
kitchen's microphone node would, after the prompt has played); its loudspeaker is a real edge agent
writing what it plays to WAV files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import wave
from pathlib import Path
from typing import Any

import media
import numpy as np
import pytest
from test_wyoming_homeassistant import read_back, words
from test_wyoming_voice import enroll
from wyoming_help import ports, running

from sensorium.bridges.esphome.server import Server
from sensorium.deployment import deployment_from_dict
from sensorium.embedded import embedded
from sensorium.evaluation.homeassistant import (
    Mic,
    add_wyoming,
    entities_of,
    last_pipeline_run,
    played,
    prefer_sensorium_pipeline,
    wavs,
)
from sensorium.evaluation.ports import free_ports
from sensorium.pipeline.bus import Publisher

pytestmark = pytest.mark.slow
DOC = (Path(__file__).resolve().parents[1] / "docs" / "home-assistant.md").read_text()
SECTION = DOC[DOC.index("## Room devices (ESPHome)") :].split("\n## ", 1)[0]
#: the guide's automation: alice entering the kitchen starts a conversation there, once an hour
HOMEASSISTANT_CONFIG = next(
    b for b in re.findall(r"```yaml\n(.*?)```", SECTION, flags=re.S) if "start_conversation" in b
)
RATE = 16000
ROOMS = ("kitchen", "office")


def said(text: str) -> list[str]:
    """The words our STT read back, without the speaker it names (our TTS's voice is an enrolled one)."""
    return words(re.sub(r"^\[[^\]]*\]\s*", "", text))


def peak(path: Path) -> int:
    with wave.open(str(path)) as w:
        return int(np.abs(np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int32)).max(initial=0))


async def frames(path: Path, timeout: float = 30.0) -> int:
    """Frames of a WAV the edge is still writing at real-time pace: once it stopped growing (closed)."""
    size, deadline = -1, time.monotonic() + timeout
    while time.monotonic() < deadline and (now := await asyncio.to_thread(os.path.getsize, path)) != size:
        size = now
        await asyncio.sleep(0.6)
    with wave.open(str(path)) as w:
        return w.getnframes()


async def test_home_assistant_drives_room_devices(home_assistant: Any, tmp_path: Path) -> None:
    ha = home_assistant
    from sensorium.apps.agent import run_builtin_agent
    from sensorium.edge.agent import EdgeAgent

    p = ports()
    gallery = tmp_path / "gallery.db"
    enroll(gallery, "joe", "piper:joe")  # the voice that speaks the commands
    dev_ports = dict(zip(ROOMS, free_ports(2), strict=True))
    addr = f"ipc://{tmp_path}/hub"
    raw = {
        "data_dir": str(tmp_path / "data"),
        "hub": {"address": addr, "heartbeat": "250ms"},
        "rooms": {r: {"speaker": f"{r}-speaker"} for r in ROOMS},
        "edges": {
            **{f"{r}-mic": {"room": r, "microphone": {}} for r in ROOMS},
            **{
                f"{r}-speaker": {"room": r, "playback": {"wav_dir": str(tmp_path / f"played-{r}"), "rate": 22050}}
                for r in ROOMS
            },
        },
        "workers": {"local": {"stages": ["wake", "arbiter", "stt", "speaker", "tts"]}},
        "stages": {"tts": {"voice_noise": False}, "speaker": {"gallery": str(gallery)}},
        "wyoming": {
            "host": "127.0.0.1",
            "zeroconf": False,
            "timeout": "5s",
            "speaker_prefix": True,  # who is speaking reaches HA's pipeline: "[joe] what time is it"
            **{f"{r}_port": p[r] for r in ("stt", "tts", "handle")},
            "wake_port": 0,
        },
        "esphome": {
            "host": "127.0.0.1",
            "zeroconf": False,
            "rooms": dev_ports,
            "key_file": str(tmp_path / "esphome.key"),
        },
    }
    dep = deployment_from_dict(raw, "<test>")
    async with embedded(dep, address=addr) as env, running(dep, env.endpoints, clock=env.clock) as gw:
        server = Server(dep, endpoints=env.endpoints, clock=env.clock)
        await server.start()
        agent = asyncio.create_task(run_builtin_agent(env.endpoints, clock=env.clock))
        speakers = [EdgeAgent(dep, f"{r}-speaker", hub_address=env.address, clock=env.clock) for r in ROOMS]
        edge_tasks = [asyncio.create_task(a.run()) for a in speakers]
        pub = Publisher(env.endpoints)
        mic = Mic(pub, env.clock, "kitchen", "kitchen-mic")
        mic_task = asyncio.create_task(mic.run())
        try:
            # --- sensorium's STT, agent and TTS as HA's preferred pipeline (Wyoming)
            ents = await entities_of(ha, await add_wyoming(ha, {k: p[k] for k in ("stt", "tts", "handle")}))
            async with ha.websocket() as ws:
                await ws.call("config/core/update", internal_url=ha.url)  # the URLs HA gives devices
                pipeline = await prefer_sensorium_pipeline(ws, ents)

            # --- Settings → Devices & services → ESPHome: host, port, then the site's Noise key
            dev_entries = {}
            for room, port in dev_ports.items():
                entry = await ha.add_integration(
                    "esphome", {"host": "127.0.0.1", "port": port}, {"noise_psk": server.key}
                )
                assert entry["title"] == f"sensorium {room}"  # the friendly name
                dev_entries[room] = entry["entry_id"]
            dev_ents = await entities_of(ha, dev_entries)
            print(f"Home Assistant entities of the room devices: {dev_ents}")
            sats = {room: next(e for e in dev_ents[room] if e.startswith("assist_satellite.")) for room in ROOMS}
            states = await ha.states()
            for room in ROOMS:
                assert states[sats[room]]["state"] == "idle", states[sats[room]]
                assert states[sats[room]]["attributes"]["supported_features"] == 3  # ANNOUNCE | START_CONVERSATION
                assert any(e.startswith("media_player.") for e in dev_ents[room]), dev_ents

            # --- announce in the kitchen (after HA's preannounce sound): heard there, only there
            t0 = time.monotonic()
            await ha.request(
                "POST",
                "/api/services/assist_satellite/announce",
                {"entity_id": sats["kitchen"], "message": "The laundry is done."},
            )
            announce_s = time.monotonic() - t0  # HA's call returns when the device reports it played
            chime, wav = sorted(wavs(tmp_path / "played-kitchen"), key=lambda f: f.stat().st_mtime)
            with wave.open(str(chime)) as w:
                assert w.getnframes() > 0.3 * w.getframerate()  # HA's preannounce sound, played first
            heard = await read_back(p["stt"], wav.read_bytes())
            assert said(heard) == words("the laundry is done"), heard
            assert not list((tmp_path / "played-office").glob("*.wav"))

            # --- the guide's automation: alice enters the kitchen (sensor.alice_room, as `sensorium mqtt` sets it)
            # → start_conversation there: the prompt plays, then the kitchen listens without a wake word
            before = wavs(tmp_path / "played-kitchen")
            await ha.request("POST", "/api/states/sensor.alice_room", {"state": "hall"})
            await ha.request("POST", "/api/states/sensor.alice_room", {"state": "kitchen"})
            prompt = await played(tmp_path / "played-kitchen", before)
            heard = await read_back(p["stt"], prompt.read_bytes())  # our STT ends at the first sentence
            assert said(heard) == words("welcome home"), heard
            before.add(prompt)
            async with asyncio.timeout(20):  # the edge reports the prompt played: listening, no wake word
                while server.devices["kitchen"].run is None:
                    await asyncio.sleep(0.05)
            mic.say(media.concat(0.3, media.speech("what time is it", "piper:joe")))
            answer = await played(tmp_path / "played-kitchen", before)
            answer_text = await read_back(p["stt"], answer.read_bytes())
            assert said(answer_text)[:2] == ["it", "is"], answer_text
            run = await last_pipeline_run(ha, pipeline)
            events = {e["type"]: e.get("data") for e in run["events"]}
            assert words(events["stt-end"]["stt_output"]["text"]) == words("[joe] what time is it"), events["stt-end"]
            assert server.devices["kitchen"].pipelines == 1 and server.devices["office"].pipelines == 0
            # HA relayed the device's command to our STT: recognised, answered with the claim's transcript
            # (not transcribed a second time)
            assert gw.metrics.relayed_commands == 1

            # alice leaves and comes back within the hour: not welcomed again
            before = wavs(tmp_path / "played-kitchen")
            await ha.request("POST", "/api/states/sensor.alice_room", {"state": "hall"})
            await ha.request("POST", "/api/states/sensor.alice_room", {"state": "kitchen"})
            await asyncio.sleep(5.0)
            assert wavs(tmp_path / "played-kitchen") == before
            assert server.devices["kitchen"].announcements == 2 and server.devices["kitchen"].pipelines == 1
            print(f"announce call took {announce_s:.2f} s; pipeline events {list(events)}")

            # --- the kitchen's media player: volume set in HA → the edge plays the announcement that much quieter
            player = next(e for e in dev_ents["kitchen"] if e.startswith("media_player."))
            assert any(e.startswith("select.") and "wake_word" in e for e in dev_ents["kitchen"]), dev_ents
            loud = peak(wav)
            await ha.request(
                "POST", "/api/services/media_player/volume_set", {"entity_id": player, "volume_level": 0.25}
            )
            async with asyncio.timeout(10):
                while (await ha.states())[player]["attributes"].get("volume_level") != 0.25:
                    await asyncio.sleep(0.1)
            before = wavs(tmp_path / "played-kitchen")
            await ha.request(
                "POST",
                "/api/services/assist_satellite/announce",
                {"entity_id": sats["kitchen"], "message": "The laundry is done.", "preannounce": False},
            )
            quiet = peak(await played(tmp_path / "played-kitchen", before))
            assert 0.2 < quiet / loud < 0.3, (quiet, loud)  # HA's TTS cache: the same audio, at a quarter
            await ha.request("POST", "/api/services/media_player/volume_set", {"entity_id": player, "volume_level": 1})

            # --- a timer set by voice with HA's own agent (its timer intents): it finishes and is heard
            async with ha.websocket() as ws:
                timers = await prefer_sensorium_pipeline(ws, ents, agent="conversation.home_assistant", name="timers")
            # (a voice not enrolled: HA's built-in agent does not parse the "[joe] " speaker prefix)
            before = wavs(tmp_path / "played-kitchen")
            await asyncio.sleep(1.0)
            kal = "flite:kal16"
            command = media.speech("set a timer for 5 seconds", kal)
            mic.say(media.concat(0.3, media.speech("hey jarvis", kal), 0.4, command))
            heard_lines: list[str] = []
            deadline = time.monotonic() + 60
            with contextlib.suppress(AssertionError):  # nothing more played: the assert below says what was
                while time.monotonic() < deadline and not any("done" in said(h) for h in heard_lines):
                    new = await played(tmp_path / "played-kitchen", before, timeout=max(deadline - time.monotonic(), 1))
                    before.add(new)
                    if await frames(new) > 0.7 * 22050:  # speech (the timer's start sound is shorter)
                        heard_lines.append(await read_back(p["stt"], new.read_bytes()))
            run = await last_pipeline_run(ha, timers)
            events = {e["type"]: e.get("data") for e in run["events"]}
            print(f"heard around the timer: {heard_lines}")
            assert any(said(h)[-3:] == ["timer", "is", "done"] and "second" in said(h) for h in heard_lines), (
                heard_lines, events.get("stt-end"), events.get("intent-end"),
            )  # fmt: skip
            assert server.devices["kitchen"].timers == {}
            assert gw.metrics.relayed_commands == 2  # the timer command (from the wake word's ring) too
        finally:
            mic_task.cancel()
            for a in speakers:
                a.stop()
            await asyncio.gather(*edge_tasks, return_exceptions=True)
            agent.cancel()
            await asyncio.gather(agent, return_exceptions=True)
            pub.close()
            await server.stop()
