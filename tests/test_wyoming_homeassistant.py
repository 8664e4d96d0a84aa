"""Home Assistant 2025.4.4 itself as the client of the Wyoming gateway.

The services are added through HA's config-flow REST API, exactly as a user adds them; then HA's own APIs
are used: its STT on a synthesized command returns our transcript, its TTS through ours returns audio our
STT reads back, its conversation API is answered by sensorium's agent, and a wake word spoken into the
kitchen's edge (the office's edge hears it 14 dB quieter) runs one Assist pipeline in HA, from the
kitchen's satellite only: HA's STT is ours (the satellite's audio, recognised), its conversation agent is
ours, its TTS is ours, and the answer plays on the kitchen's edge.

One test, in steps, because the gateway's ports are HA's config entries: they must outlive the steps.
"""

from __future__ import annotations

import asyncio
import re
import time
import wave
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import media
import numpy as np
import pytest
from wyoming.asr import Transcribe
from wyoming.audio import AudioStart, AudioStop
from wyoming_help import deployment, ports, running

from sensorium.cli import main as cli
from sensorium.embedded import embedded
from sensorium.evaluation.homeassistant import add_wyoming, entities_of, prefer_sensorium_pipeline
from sensorium.pipeline.media import resample

pytestmark = pytest.mark.slow
RATE = 16000
ROOMS = ("kitchen", "office")


def words(text: str) -> list[str]:
    """The words of ``text`` without our speaker prefix ("[joe] ")."""
    return [w.strip(".,!?'[]").lower() for w in re.sub(r"^\[[^\]]*\]\s*", "", text).split()]


def room_noise(pcm: np.ndarray) -> np.ndarray:
    return media.mix(pcm, media.noise(len(pcm) / RATE, dbfs=-60, color="pink"))


async def read_back(stt_port: int, wav_bytes: bytes) -> str:
    """Our STT (through the gateway) on a WAV file."""
    from wyoming_help import Conn as C

    with wave.open(BytesIO(wav_bytes)) as w:
        rate, pcm = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), "<i2")
    pcm = media.concat(0.3, resample(pcm, rate, RATE), 0.3)
    async with C(stt_port) as c:
        await c.send(Transcribe(language="en"), AudioStart(rate=RATE, width=2, channels=1))
        from wyoming.audio import AudioChunk

        for i in range(0, len(pcm), 1280):
            await c.send(AudioChunk(rate=RATE, width=2, channels=1, audio=pcm[i : i + 1280].tobytes()))
        await c.send(AudioStop())
        return str((await c.until("transcript"))[-1].data["text"])


async def test_home_assistant_uses_sensorium_for_voice(home_assistant: Any, tmp_path: Path) -> None:
    ha = home_assistant
    from sensorium.apps.agent import Turn, run_builtin_agent
    from sensorium.edge.agent import EdgeAgent

    p = ports()
    utterance = media.concat(1.0, media.speech("hey jarvis", "piper:joe"), 0.3, media.speech("what time is it"), 4.0)
    edges = {}
    for room, db in (("kitchen", 0.0), ("office", -14.0)):
        loud = np.clip(utterance.astype(np.float32) * 10 ** (db / 20), -32768, 32767).astype(np.int16)
        edges[f"{room}-pi"] = {
            "room": room,
            "microphone": {"file": str(media.write_wav(tmp_path / f"{room}.wav", room_noise(loud)))},
            "playback": {"wav_dir": str(tmp_path / f"played-{room}"), "rate": 22050},
        }
    addr = f"ipc://{tmp_path}/hub"
    enrol = media.speech_wav("the quick brown fox jumps over the lazy dog", "piper:joe")
    assert cli(["enroll", "joe", "--voice", str(enrol), "--gallery", str(tmp_path / "data" / "gallery.db")]) == 0
    dep = deployment(
        tmp_path,
        addr,
        p,
        stages=["wake", "arbiter", "stt", "speaker", "tts"],
        edges=edges,
        wyoming={"speaker_prefix": True},
    )
    turns: list[Turn] = []
    async with embedded(dep, address=addr) as env, running(dep, env.endpoints, clock=env.clock) as gw:
        agent = asyncio.create_task(run_builtin_agent(env.endpoints, clock=env.clock, turns=turns))

        # --- the user adds each port in Settings → Devices & services → Wyoming Protocol
        entries = await add_wyoming(ha, {key: p[key] for key in ("wake", "stt", "tts", "handle", *ROOMS)})
        ents = await entities_of(ha, entries)
        print(f"Home Assistant entities: {ents}")
        assert [e.split(".")[0] for e in ents["wake"]] == ["wake_word"]
        assert [e.split(".")[0] for e in ents["stt"]] == ["stt"]
        assert [e.split(".")[0] for e in ents["tts"]] == ["tts"]
        assert [e.split(".")[0] for e in ents["handle"]] == ["conversation"]
        states = await ha.states()
        for key in ("wake", "stt", "tts", "handle"):
            assert states[ents[key][0]]["state"] != "unavailable", ents[key]
        satellites = {}
        for room in ROOMS:
            [sat] = [e for e in ents[room] if e.startswith("assist_satellite.")]
            satellites[room] = sat
            assert states[sat]["state"] == "idle"
        devices = {d["id"]: d for d in await ha.ws("config/device_registry/list")}
        areas = {a["area_id"]: a["name"] for a in await ha.ws("config/area_registry/list")}
        registry = {e["entity_id"]: e for e in await ha.ws("config/entity_registry/list")}
        for room in ROOMS:
            device = devices[registry[satellites[room]]["device_id"]]
            assert areas.get(device["area_id"] or "", "").lower() == room  # the satellite's area is its room

        # --- HA's speech-to-text (REST) on a synthesized command returns our transcript, naming the speaker
        # from the first request after the worker started (its stages were warm before it said ready)
        async with httpx.AsyncClient(base_url=ha.url, headers={"Authorization": f"Bearer {ha.token}"}) as http:
            heard_stt = []
            for text, voice in [
                ("turn off the hallway lights", "piper:joe"),
                ("turn on the kitchen lights", "piper:joe"),
                ("what is the weather tomorrow", "flite:rms"),  # not enrolled: no name
                ("play some music in the living room", "piper:joe"),
            ]:
                command = room_noise(media.concat(0.3, media.speech(text, voice), 0.8))
                t = time.perf_counter()
                r = await http.post(
                    f"/api/stt/{ents['stt'][0]}",
                    content=command.astype("<i2").tobytes(),
                    headers={
                        "X-Speech-Content": "format=wav; codec=pcm; sample_rate=16000; bit_rate=16; channel=1; "
                        "language=en"
                    },
                    timeout=30,
                )
                assert r.status_code == 200, r.text
                result = r.json()
                heard_stt.append((result["text"], round(time.perf_counter() - t, 2)))
                assert result["result"] == "success" and result["text"], heard_stt
                if not heard_stt[1:]:  # the first: every word (tiny.en mishears a word of some of the others)
                    assert words(result["text"]) == words(text), heard_stt
                assert result["text"].startswith("[joe] ") == (voice == "piper:joe"), heard_stt
            print(f"Home Assistant's STT (text, seconds per request): {heard_stt}")

            # --- HA's text-to-speech through ours: audio our STT reads back
            r = await http.post(
                "/api/tts_get_url",
                json={
                    "engine_id": ents["tts"][0],
                    "message": "The garage door is closed.",
                    "language": "en",
                    "options": {"preferred_format": "wav"},
                },
                timeout=30,
            )
            assert r.status_code == 200, r.text
            audio = await http.get(r.json()["path"], timeout=30)
            assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
        heard = await read_back(p["stt"], audio.content)
        assert words(heard) == words("the garage door is closed")

        # --- HA's conversation API answered by sensorium's agent
        reply = await ha.request(
            "POST", "/api/conversation/process", {"text": "what time is it", "agent_id": ents["handle"][0]}
        )
        speech = reply["response"]["speech"]["plain"]["speech"]
        assert speech.startswith("It is "), reply

        # --- Assist: sensorium's STT, agent and TTS in the preferred pipeline; the satellites use it
        async with ha.websocket() as ws:
            pipeline = await prefer_sensorium_pipeline(ws, ents)
            changes = await ws.subscribe_events("state_changed")

            # --- "hey jarvis, what time is it" in the kitchen; the office hears it too, quieter
            agents = [EdgeAgent(dep, name, hub_address=env.address, clock=env.clock) for name in edges]
            edge_tasks = [asyncio.create_task(a.run()) for a in agents]
            listening = {room: 0 for room in ROOMS}
            seen: list[tuple[str, str]] = []
            t0 = time.monotonic()
            try:
                async with asyncio.timeout(60):
                    while True:
                        ev = await changes.get()
                        eid = ev["data"]["entity_id"]
                        room = next((r for r, s in satellites.items() if s == eid), None)
                        if room is None or ev["data"]["new_state"] is None:
                            continue
                        state = ev["data"]["new_state"]["state"]
                        seen.append((room, state))
                        listening[room] += state == "listening"
                        if room == "kitchen" and state == "idle" and ("kitchen", "responding") in seen:
                            break  # the answer was played and HA heard "played"
                await asyncio.sleep(1.0)  # a second pipeline (the office) would have started by now
            finally:
                for a in agents:
                    a.stop()
                await asyncio.gather(*edge_tasks, return_exceptions=True)
            runs = (await ws.call("assist_pipeline/pipeline_debug/list", pipeline_id=pipeline["id"]))["pipeline_runs"]
            run = await ws.call(
                "assist_pipeline/pipeline_debug/get",
                pipeline_id=pipeline["id"],
                pipeline_run_id=runs[-1]["pipeline_run_id"],
            )
        took = time.monotonic() - t0
        # HA's answer, voiced by our TTS, played on the kitchen's edge (and only there)
        [played] = list((tmp_path / "played-kitchen").glob("*.wav"))
        answer = await read_back(p["stt"], played.read_bytes())
        agent.cancel()
        await asyncio.gather(agent, return_exceptions=True)
        pipelines = {room: gw.satellites[room].pipelines for room in ROOMS}
        cached = gw.metrics.cached_answers
    print(f"satellite states {seen}; pipelines started in HA by room {pipelines}; {len(runs)} run(s), {took:.1f} s")
    assert listening == {"kitchen": 1, "office": 0} and pipelines == {"kitchen": 1, "office": 0}
    assert len(runs) == 1
    events = {e["type"]: e.get("data") for e in run["events"]}
    assert words(events["stt-end"]["stt_output"]["text"]) == words("what time is it")
    assert events["stt-end"]["stt_output"]["text"].startswith("[joe] ")  # the satellite's command: who spoke
    assert events["intent-end"]["intent_output"]["response"]["speech"]["plain"]["speech"].startswith("It is ")
    assert "tts-end" in events and "error" not in events, events
    assert words(answer)[:2] == ["it", "is"], answer
    assert cached == 1  # HA's TTS step got the audio our tts stage had made of the agent's answer already
    assert not (tmp_path / "played-office").exists() or not list((tmp_path / "played-office").glob("*.wav"))
    # sensorium's agent answered HA's two conversation requests, never the kitchen's command itself
    assert len(turns) == 2 and all(t.utterance_id.startswith(f"{dep.wyoming.name}-") for t in turns), turns
