"""The ESPHome room devices without models, driven by aioesphomeapi's own client (what Home Assistant uses).

The stages' answers are published on the bus by the test (a wake arbitration, a final transcript, a
playback status) so each step can be checked exactly; tests/test_esphome_homeassistant.py runs it
against Home Assistant itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import threading
import wave
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aioesphomeapi import APIClient, InvalidEncryptionKeyAPIError, RequiresEncryptionAPIError
from aioesphomeapi.model import VoiceAssistantEventType as Ev
from aioesphomeapi.model import VoiceAssistantFeature as Feature

from bridges.esphome.api import make_plain_text_packets
from bridges.esphome.server import Server, load_key
from evaluation.ports import free_ports
from pipeline.bus import Publisher, Subscriber
from pipeline.config import ConfigError
from pipeline.hub import Hub
from pipeline.messages import AudioChunk as BusChunk
from pipeline.messages import Listen, Message, PlaybackStatus, TtsAudio, WakeArbitrated
from sensorium.deployment import deployment_from_dict

RATE = 16000


def dep_of(tmp_path: Path, address: str, rooms: dict[str, int] | None, **extra: Any) -> Any:
    raw: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "hub": {"address": address, "heartbeat": "250ms"},
        "rooms": {"kitchen": {}, "office": {}, "hall": {}},
        "edges": {
            "kitchen-pi": {"room": "kitchen", "microphone": {}, "playback": {}},
            "office-pi": {"room": "office", "microphone": {}, "playback": {}},
            "hall-pi": {"room": "hall", "cameras": {"door": {}}},
        },
        "esphome": {"host": "127.0.0.1", "zeroconf": False, "key_file": str(tmp_path / "esphome.key"), **extra},
    }
    if rooms is not None:
        raw["esphome"]["rooms"] = rooms
    return deployment_from_dict(raw, "<test>")


@contextlib.asynccontextmanager
async def site(
    tmp_path: Path, office_speaker: bool = True, **extra: Any
) -> AsyncIterator[tuple[Server, Publisher, Subscriber]]:
    address = f"ipc://{tmp_path}/hub"
    p = free_ports(2)
    dep = dep_of(tmp_path, address, {"kitchen": p[0], "office": p[1]}, **extra)
    if not office_speaker:
        dep.edges["office-pi"].playback = None
    hub = Hub(dep.hub, bind=address)
    await hub.start()
    server = Server(dep, endpoints=hub.endpoints, clock=hub.clock)
    await server.start()
    pub = Publisher(hub.endpoints)
    sub = Subscriber(hub.endpoints, ["listen/", "tts_audio/"])
    await asyncio.sleep(0.3)
    try:
        yield server, pub, sub
    finally:
        pub.close()
        sub.close()
        await server.stop()
        await hub.stop()


def client(server: Server, room: str, key: str | None) -> APIClient:
    d = server.devices[room]
    return APIClient("127.0.0.1", d.port, None, noise_psk=key, expected_name=d.name)


def test_config_picks_mic_rooms_and_checks_ports(tmp_path: Path) -> None:
    dep = dep_of(tmp_path, "ipc:///tmp/x", None)
    assert dep.esphome.ports(["kitchen", "office"]) == {"kitchen": 6053, "office": 6054}
    with pytest.raises(ConfigError, match=r"\[esphome.rooms\] hall: no edge node with a microphone"):
        dep_of(tmp_path, "ipc:///tmp/x", {"hall": 7000})
    with pytest.raises(ConfigError, match=r"\[esphome.rooms\] attic: not a room"):
        dep_of(tmp_path, "ipc:///tmp/x", {"attic": 7000})
    with pytest.raises(ConfigError, match="port already used by kitchen"):
        dep_of(tmp_path, "ipc:///tmp/x", {"kitchen": 7000, "office": 7000})


def test_key_file_created_once_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "k" / "esphome.key"
    key = load_key(path)
    assert len(base64.b64decode(key)) == 32 and load_key(path) == key
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text("bm90IGEga2V5\n")
    with pytest.raises(ConfigError, match=r"key_file .*: the Noise key is 9 bytes, expected 32"):
        load_key(path)


async def test_home_assistant_client_connects_with_the_key(tmp_path: Path, caplog: Any) -> None:
    caplog.set_level(logging.INFO, "sensorium.esphome")
    async with site(tmp_path) as (server, _, _):
        c = client(server, "kitchen", server.key)
        await c.connect(login=True)
        info = await c.device_info()
        assert info.name == "sensorium-kitchen" and info.suggested_area == "Kitchen"
        flags = info.voice_assistant_feature_flags_compat(c.api_version)
        assert flags & Feature.VOICE_ASSISTANT and flags & Feature.API_AUDIO
        assert flags & Feature.ANNOUNCE and flags & Feature.START_CONVERSATION
        config = await c.get_voice_assistant_configuration(5.0)
        assert [w.id for w in config.available_wake_words] == ["hey_jarvis"]
        await c.disconnect()

        # a wrong key: the client is told so; the device keeps serving the right one
        bad = client(server, "kitchen", base64.b64encode(secrets.token_bytes(32)).decode())
        with pytest.raises(InvalidEncryptionKeyAPIError):
            await bad.connect(login=True)
        plain = client(server, "office", None)
        with pytest.raises(RequiresEncryptionAPIError):
            await plain.connect(login=True)
        assert "wrong Noise key" in caplog.text and "speaks plaintext" in caplog.text
        c = client(server, "kitchen", server.key)
        await c.connect(login=True)
        assert (await c.device_info()).name == "sensorium-kitchen"
        await c.disconnect()


def serve_wav(pcm: np.ndarray, rate: int) -> tuple[str, ThreadingHTTPServer]:
    buf = BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    body = buf.getvalue()

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{srv.server_address[1]}/answer.wav", srv


async def until(sub: Subscriber, pred: Any, timeout: float = 5.0) -> Message:
    async with asyncio.timeout(timeout):
        while True:
            msg = await sub.recv()
            if pred(msg):
                return msg


async def test_wake_streams_audio_answer_plays_and_ha_leaving_releases_the_room(tmp_path: Path, caplog: Any) -> None:
    caplog.set_level(logging.INFO, "sensorium.esphome")
    tone = (np.sin(np.arange(RATE) * 2 * np.pi * 440 / 22050) * 8000).astype(np.int16)
    url, media = serve_wav(tone, 22050)
    async with site(tmp_path) as (server, pub, sub):
        c = client(server, "kitchen", server.key)
        await c.connect(login=True)
        started: list[tuple[str, int]] = []
        audio: list[bytes] = []
        stops: list[bool] = []
        finished: list[Any] = []

        async def on_start(conv: str, flags: int, settings: Any, phrase: str | None) -> int:
            started.append((phrase or "", flags))
            return 0

        async def on_stop(abort: bool) -> None:
            stops.append(abort)

        async def on_audio(data: bytes) -> None:
            audio.append(data)

        async def on_finished(ok: Any) -> None:
            finished.append(ok)

        c.subscribe_voice_assistant(
            handle_start=on_start, handle_stop=on_stop, handle_audio=on_audio, handle_announcement_finished=on_finished
        )
        await asyncio.sleep(0.3)
        # the kitchen's edge streamed 1 s of audio; the wake word was 0.5 s in; the arbiter gives it the kitchen
        now = server.bus.clock.now()
        t0 = now - 1.0
        for i in range(10):
            chunk = (np.full(1600, i + 1, np.int16)).tobytes()
            await pub.publish(BusChunk(room="kitchen", source="kitchen-pi", time=t0 + i * 0.1, rate=RATE, data=chunk))
        await asyncio.sleep(0.2)
        await pub.publish(
            WakeArbitrated(room="kitchen", node="kitchen-pi", word="hey_jarvis", wake_time=t0 + 0.5, time=now)
        )
        listen = await until(sub, lambda m: isinstance(m, Listen))
        assert isinstance(listen, Listen) and listen.action == "open" and listen.node == "kitchen-pi"
        await asyncio.sleep(0.3)
        assert started == [("hey_jarvis", 0)]
        got = np.frombuffer(b"".join(audio), np.int16)
        assert len(got) == 5 * 1600 // 512 * 512 and set(got.tolist()) <= {6, 7, 8, 9, 10}  # from the wake word on
        # HA's VAD ended the command; its answer's URL plays on the kitchen's edge
        c.send_voice_assistant_event(Ev.VOICE_ASSISTANT_STT_VAD_END, None)
        c.send_voice_assistant_event(Ev.VOICE_ASSISTANT_TTS_END, {"url": url})
        c.send_voice_assistant_event(Ev.VOICE_ASSISTANT_RUN_END, None)
        await asyncio.sleep(0.3)
        assert stops == [False]
        chunks: list[TtsAudio] = []
        while not chunks or not chunks[-1].final:
            m = await until(sub, lambda m: isinstance(m, TtsAudio))
            assert isinstance(m, TtsAudio)
            chunks.append(m)
        played = np.frombuffer(b"".join(m.data for m in chunks), np.int16)
        assert {m.room for m in chunks} == {"kitchen"} and chunks[0].rate == 22050
        assert np.array_equal(played, tone)
        await pub.publish(
            PlaybackStatus(room="kitchen", source="kitchen-pi", answer_id=chunks[0].answer_id, state="ended")
        )
        await asyncio.sleep(0.3)
        assert [f.success for f in finished] == [True]
        assert server.devices["kitchen"].run is None

        # a second wake word; Home Assistant goes away mid-pipeline: the utterance is dropped at once
        await pub.publish(
            WakeArbitrated(room="kitchen", node="kitchen-pi", word="hey_jarvis", wake_time=server.bus.clock.now())
        )
        opened = await until(sub, lambda m: isinstance(m, Listen) and m.action == "open")
        await c.disconnect()
        dropped = await until(sub, lambda m: isinstance(m, Listen) and m.action == "drop")
        assert isinstance(opened, Listen) and isinstance(dropped, Listen)
        assert dropped.request_id == opened.request_id
        assert "went away mid-pipeline" in caplog.text
    media.shutdown()


async def test_unknown_message_type_is_logged_and_the_connection_keeps_serving(tmp_path: Path, caplog: Any) -> None:
    caplog.set_level(logging.INFO, "sensorium.esphome")
    async with site(tmp_path, key_file="") as (server, _, _):
        d = server.devices["office"]
        reader, writer = await asyncio.open_connection("127.0.0.1", d.port)
        from aioesphomeapi import api_pb2 as pb

        writer.writelines(make_plain_text_packets([(9999, b"\x01\x02"), (7, pb.PingRequest().SerializeToString())]))
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(16), 5)
        assert reply == bytes([0, 0, 8])  # PingResponse, empty
        assert "unknown message type 9999" in caplog.text
        writer.close()


async def voice_client(server: Server, room: str) -> tuple[APIClient, list[str], list[Any]]:
    """A connected client subscribed to the voice assistant: the phrases pipelines start with, announce-finished."""
    c = client(server, room, server.key)
    await c.connect(login=True)
    started: list[str] = []
    finished: list[Any] = []

    async def on_start(conv: str, flags: int, settings: Any, phrase: str | None) -> int:
        started.append(phrase or "")
        return 0

    async def on_stop(abort: bool) -> None:
        pass

    async def on_audio(data: bytes) -> None:
        pass

    async def on_finished(msg: Any) -> None:
        finished.append(msg)

    c.subscribe_voice_assistant(
        handle_start=on_start, handle_stop=on_stop, handle_audio=on_audio, handle_announcement_finished=on_finished
    )
    await asyncio.sleep(0.3)
    return c, started, finished


async def test_greet_once_per_person_then_listen_without_wake_word(tmp_path: Path) -> None:
    from pipeline.messages import Presence, Say

    async with site(tmp_path, greet="Welcome home, {person}.") as (server, pub, _):
        says = Subscriber(server.bus.endpoints, ["say/"])
        await asyncio.sleep(0.3)
        c, started, _ = await voice_client(server, "kitchen")
        for person in ("alice", "alice", "unknown", "bob"):
            await pub.publish(Presence(room="kitchen", person=person, state="entered", time=server.bus.clock.now()))
            await asyncio.sleep(0.1)
        got: list[Say] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.5):
                while True:
                    m = await says.recv()
                    if isinstance(m, Say):
                        got.append(m)
        assert sorted(m.text for m in got) == ["Welcome home, Alice.", "Welcome home, Bob."]
        assert {m.room for m in got} == {"kitchen"}
        assert started == []  # nobody listens before the greeting was played
        await pub.publish(
            PlaybackStatus(room="kitchen", source="kitchen-pi", answer_id=got[0].answer_id, state="ended")
        )
        await asyncio.sleep(0.5)
        assert started == [""]  # a pipeline without a wake word
        says.close()
        await c.disconnect()


async def test_agent_asking_back_continues_the_conversation(tmp_path: Path) -> None:
    tone = (np.sin(np.arange(4000) * 0.2) * 4000).astype(np.int16)
    url, media = serve_wav(tone, RATE)
    async with site(tmp_path) as (server, pub, sub):
        c, started, finished = await voice_client(server, "kitchen")
        await pub.publish(
            WakeArbitrated(room="kitchen", node="kitchen-pi", word="hey_jarvis", wake_time=server.bus.clock.now())
        )
        await until(sub, lambda m: isinstance(m, Listen))
        c.send_voice_assistant_event(Ev.VOICE_ASSISTANT_STT_VAD_END, None)
        c.send_voice_assistant_event(Ev.VOICE_ASSISTANT_INTENT_END, {"continue_conversation": "1"})
        c.send_voice_assistant_event(Ev.VOICE_ASSISTANT_TTS_END, {"url": url})
        c.send_voice_assistant_event(Ev.VOICE_ASSISTANT_RUN_END, None)
        last = await until(sub, lambda m: isinstance(m, TtsAudio) and m.final)
        assert isinstance(last, TtsAudio)
        await pub.publish(PlaybackStatus(room="kitchen", source="kitchen-pi", answer_id=last.answer_id, state="ended"))
        await asyncio.sleep(0.5)
        assert started == ["hey_jarvis", ""] and len(finished) == 1  # asked back: listening again, no wake word
        await c.disconnect()
    media.shutdown()


def test_the_guides_esphome_table_and_commands() -> None:
    import re
    import shlex
    import tomllib

    from sensorium.cli import build_parser

    repo = Path(__file__).resolve().parents[1]
    doc = (repo / "docs" / "home-assistant.md").read_text()
    section = doc[doc.index("## Room devices (ESPHome)") :].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, flags=re.S)
    [table] = [tomllib.loads(body) for lang, body in blocks if lang == "toml"]
    raw = tomllib.loads((repo / "examples/deploy-phase0.toml").read_text())
    raw["esphome"] = table["esphome"]
    dep = deployment_from_dict(raw, "docs/home-assistant.md")
    assert dep.esphome is not None and dep.esphome.greet and dep.esphome.key_file
    mic_rooms = [r for r in dep.rooms if dep.microphones(r)]
    assert list(dep.esphome.ports(mic_rooms).values()) == list(range(6053, 6053 + len(mic_rooms)))
    lines = [ln for lang, b in blocks if lang == "sh" for ln in b.splitlines() if ln.startswith("sensorium ")]
    assert lines == ["sensorium esphome --config deploy.toml"]
    build_parser().parse_args(shlex.split(lines[0])[1:])


async def test_second_home_assistant_takes_over_and_a_room_without_loudspeaker_says_so(
    tmp_path: Path, caplog: Any
) -> None:
    from aioesphomeapi import api_pb2 as pb

    caplog.set_level(logging.INFO, "sensorium.esphome")
    async with site(tmp_path, office_speaker=False) as (server, pub, sub):
        first, started_1, _ = await voice_client(server, "kitchen")
        second, started_2, _ = await voice_client(server, "kitchen")
        assert "a second Home Assistant" in caplog.text
        await pub.publish(
            WakeArbitrated(room="kitchen", node="kitchen-pi", word="hey_jarvis", wake_time=server.bus.clock.now())
        )
        await until(sub, lambda m: isinstance(m, Listen))
        await asyncio.sleep(0.3)
        assert started_1 == [] and started_2 == ["hey_jarvis"]  # one pipeline, in the newest connection
        assert (await first.device_info()).name == "sensorium-kitchen"  # the first still answers
        await first.disconnect()
        await second.disconnect()

        # the office has a microphone but no loudspeaker: an announcement fails at once, with a log line
        c, _, finished = await voice_client(server, "office")
        c._get_connection().send_message(pb.VoiceAssistantAnnounceRequest(media_id="http://127.0.0.1:9/x.wav"))
        async with asyncio.timeout(3):
            while not finished:
                await asyncio.sleep(0.05)
        assert [f.success for f in finished] == [False]
        assert "office device: no edge in this room plays audio" in caplog.text
        assert (await c.device_info()).name == "sensorium-office"
        await c.disconnect()


async def test_announce_skips_a_preannounce_path_and_plays_the_message(tmp_path: Path, caplog: Any) -> None:
    from aioesphomeapi import api_pb2 as pb

    caplog.set_level(logging.INFO, "sensorium.esphome")
    tone = (np.sin(np.arange(3200) * 0.3) * 4000).astype(np.int16)
    url, media = serve_wav(tone, RATE)
    async with site(tmp_path) as (server, pub, sub):
        c, _, finished = await voice_client(server, "kitchen")
        c._get_connection().send_message(
            pb.VoiceAssistantAnnounceRequest(
                media_id=url, text="hello", preannounce_media_id="/api/assist_satellite/static/preannounce.mp3"
            )
        )
        last = await until(sub, lambda m: isinstance(m, TtsAudio) and m.final)
        assert isinstance(last, TtsAudio) and last.text == "hello"
        await pub.publish(PlaybackStatus(room="kitchen", source="kitchen-pi", answer_id=last.answer_id, state="ended"))
        async with asyncio.timeout(3):
            while not finished:
                await asyncio.sleep(0.05)
        assert [f.success for f in finished] == [True]
        assert "skipping the preannounce sound" in caplog.text
        await c.disconnect()
    media.shutdown()
