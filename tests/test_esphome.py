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
import time
import wave
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aioesphomeapi import APIClient, InvalidEncryptionKeyAPIError, RequiresEncryptionAPIError
from aioesphomeapi.model import MediaPlayerFormatPurpose, MediaPlayerInfo
from aioesphomeapi.model import VoiceAssistantEventType as Ev
from aioesphomeapi.model import VoiceAssistantFeature as Feature
from aioesphomeapi.model import VoiceAssistantTimerEventType as TimerEv

from sensorium.bridges.esphome.api import make_plain_text_packets
from sensorium.bridges.esphome.device import stream_pcm
from sensorium.bridges.esphome.server import Server, load_key
from sensorium.deployment import deployment_from_dict
from sensorium.evaluation.ports import free_ports
from sensorium.pipeline.bus import Publisher, Subscriber
from sensorium.pipeline.config import ConfigError
from sensorium.pipeline.hub import Hub
from sensorium.pipeline.messages import AudioChunk as BusChunk
from sensorium.pipeline.messages import Listen, Message, PlaybackStatus, TtsAudio, WakeArbitrated

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
    tmp_path: Path, office_speaker: bool = True, wake_words: list[str] | None = None, **extra: Any
) -> AsyncIterator[tuple[Server, Publisher, Subscriber]]:
    address = f"ipc://{tmp_path}/hub"
    p = free_ports(2)
    dep = dep_of(tmp_path, address, {"kitchen": p[0], "office": p[1]}, **extra)
    if not office_speaker:
        dep.edges["office-pi"].playback = None
    hub = Hub(dep.hub, bind=address)
    await hub.start()
    server = Server(dep, endpoints=hub.endpoints, clock=hub.clock, wake_words=wake_words)
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
        entities, _ = await c.list_entities_services()
        [player] = [e for e in entities if isinstance(e, MediaPlayerInfo)]
        # WAV for announcements: HA's TTS then skips its mp3 encoding and the device reads the samples as they come
        assert [(f.format, f.purpose) for f in player.supported_formats] == [
            ("wav", MediaPlayerFormatPurpose.DEFAULT), ("wav", MediaPlayerFormatPurpose.ANNOUNCEMENT),
        ]  # fmt: skip
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


def wav_bytes(pcm: np.ndarray, rate: int, channels: int = 1) -> bytes:
    buf = BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()


def serve_wav(
    pcm: np.ndarray, rate: int, *, body: bytes | None = None, split: int = 0, pause: float = 0.0
) -> tuple[str, ThreadingHTTPServer]:
    """Serve a WAV (or ``body``); with ``split``, its first ``split`` bytes, then ``pause`` s later the rest."""
    data = wav_bytes(pcm, rate) if body is None else body

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if split:
                self.wfile.write(data[:split])
                self.wfile.flush()
                time.sleep(pause)  # a TTS still synthesizing (a server thread, not the event loop)
            self.wfile.write(data[split:])

        def log_message(self, *a: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{srv.server_address[1]}/answer.wav", srv


async def test_a_streaming_answer_plays_while_it_downloads() -> None:
    """Home Assistant's TTS proxy sends the WAV as it is synthesized: its first samples pass on at once."""
    stereo = np.stack([np.arange(22050) % 1000, np.arange(22050) % 1000 + 2], axis=1).astype(np.int16)
    body = wav_bytes(stereo.reshape(-1), 22050, channels=2)
    url, srv = serve_wav(stereo, 22050, body=body, split=44 + 4 * 2205 + 1, pause=1.5)  # 0.1 s, half a frame
    t0 = time.monotonic()
    got: list[tuple[float, bytes, int]] = []
    async for pcm, rate in stream_pcm(url):
        got.append((time.monotonic() - t0, pcm, rate))
    srv.shutdown()
    assert got[0][0] < 1.0 and got[-1][0] >= 1.5  # the first audio came before the rest was sent
    assert {r for _, _, r in got} == {22050}
    mono = np.frombuffer(b"".join(p for _, p, _ in got), np.int16)
    assert np.array_equal(mono, (np.arange(22050) % 1000 + 1).astype(np.int16))  # the channels' mean


async def test_a_compressed_answer_streams_through_ffmpeg_and_bad_media_is_named(tmp_path: Path) -> None:
    tone = (np.sin(np.arange(RATE) * 2 * np.pi * 440 / RATE) * 8000).astype(np.int16)
    (tmp_path / "t.wav").write_bytes(wav_bytes(tone, RATE))
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(tmp_path / "t.wav"), str(tmp_path / "t.flac")
    )
    assert await proc.wait() == 0
    url, srv = serve_wav(tone, RATE, body=(tmp_path / "t.flac").read_bytes())
    pcm = b"".join([p async for p, rate in stream_pcm(url) if rate == RATE])
    assert abs(len(pcm) // 2 - RATE) < 200
    srv.shutdown()
    url, srv = serve_wav(tone, RATE, body=b"this is not audio at all" * 10)
    with pytest.raises(ValueError, match="ffmpeg could not decode"):
        async for _ in stream_pcm(url):
            pass
    srv.shutdown()


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
    from sensorium.pipeline.messages import Presence, Say

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


async def test_the_agents_client_starts_a_conversation_with_a_person_wherever_they_are(
    tmp_path: Path, caplog: Any
) -> None:
    from sensorium.pipeline.client import Client
    from sensorium.pipeline.messages import Presence, Say

    caplog.set_level(logging.INFO, "sensorium.esphome")
    async with site(tmp_path) as (server, pub, _):
        says = Subscriber(server.bus.endpoints, ["say/"])
        kitchen, started, _ = await voice_client(server, "kitchen")
        office, office_started, _ = await voice_client(server, "office")
        await pub.publish(Presence(room="kitchen", person="alice", state="entered", time=server.bus.clock.now()))
        await pub.publish(Presence(room="office", person="alice", state="entered", time=server.bus.clock.now()))
        await asyncio.sleep(0.3)
        async with Client(server.bus.endpoints, name="agent") as agent:
            await asyncio.sleep(0.3)  # the client's publisher connected (a fresh PUB socket's first send can be lost)
            aid = await agent.start_conversation("", "Dinner is ready. Shall I call Bob?", person="alice")
            got = await until(says, lambda m: isinstance(m, Say))
            assert isinstance(got, Say) and (got.room, got.text, got.answer_id) == (
                "office", "Dinner is ready. Shall I call Bob?", aid,
            )  # fmt: skip
            await agent.start_conversation("", "Dinner is getting cold.", person="alice")  # within the hour
            await agent.start_conversation("", "Hello?", person="mallory")  # nowhere
            await agent.start_conversation("kitchen", "The oven is hot.")  # a room, nobody in particular
            later = await until(says, lambda m: isinstance(m, Say))
            assert isinstance(later, Say) and (later.room, later.text) == ("kitchen", "The oven is hot.")
        assert "not in any known room" in caplog.text
        assert "alice addressed by start_conversation; greeted" in caplog.text  # within the cooldown
        assert office_started == [] and started == []  # nobody listens before the prompt was played
        await pub.publish(PlaybackStatus(room="office", source="office-pi", answer_id=aid, state="ended"))
        await asyncio.sleep(0.5)
        assert office_started == [""] and started == []  # the office listens, without a wake word
        says.close()
        await kitchen.disconnect()
        await office.disconnect()


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


async def test_timers_are_heard_in_the_room(tmp_path: Path) -> None:
    from sensorium.pipeline.messages import Say

    async with site(tmp_path) as (server, pub, _):
        heard = Subscriber(server.bus.endpoints, ["say/", "tts_audio/"])
        await asyncio.sleep(0.3)
        c, _, _ = await voice_client(server, "kitchen")
        info = await c.device_info()
        assert info.voice_assistant_feature_flags_compat(c.api_version) & Feature.TIMERS
        c.send_voice_assistant_timer_event(TimerEv.VOICE_ASSISTANT_TIMER_STARTED, "t1", "pasta", 300, 300, True)
        c.send_voice_assistant_timer_event(TimerEv.VOICE_ASSISTANT_TIMER_FINISHED, "t2", None, 5400, 0, False)
        c.send_voice_assistant_timer_event(TimerEv.VOICE_ASSISTANT_TIMER_CANCELLED, "t1", "pasta", 300, 200, False)
        got: list[Message] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.5):
                while True:
                    got.append(await heard.recv())
        lines = [m.text for m in got if isinstance(m, Say)]
        assert lines == [
            "The pasta timer is set.", "Your 1 hour 30 minute timer is done.", "The pasta timer is cancelled.",
        ]  # fmt: skip
        sounds = [m for m in got if isinstance(m, TtsAudio)]
        assert len(sounds) == 3 and all(m.room == "kitchen" and m.final and len(m.data) > 8000 for m in sounds)
        assert server.devices["kitchen"].timers == {}  # finished and cancelled timers are forgotten
        # a timer started by voice: the pipeline's answer says so; the room hears only the sound
        await pub.publish(
            WakeArbitrated(room="kitchen", node="kitchen-pi", word="hey_jarvis", wake_time=server.bus.clock.now())
        )
        await asyncio.sleep(0.3)
        c.send_voice_assistant_timer_event(TimerEv.VOICE_ASSISTANT_TIMER_STARTED, "t3", None, 5, 5, True)
        got = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                while True:
                    got.append(await heard.recv())
        assert [type(m).__name__ for m in got] == ["TtsAudio"]
        assert server.devices["kitchen"].timers == {"t3": ("", 5, 5, True)}
        heard.close()
        await c.disconnect()


async def test_media_player_volume_mute_and_url_and_the_wake_word_select(tmp_path: Path, caplog: Any) -> None:
    from aioesphomeapi.model import MediaPlayerCommand, MediaPlayerEntityState

    caplog.set_level(logging.INFO, "sensorium.esphome")
    tone = (np.sin(np.arange(4000) * 0.2) * 4000).astype(np.int16)
    url, media = serve_wav(tone, RATE)
    async with site(tmp_path, wake_words=["hey_jarvis", "alexa"]) as (server, pub, sub):
        gains = Subscriber(server.bus.endpoints, ["playback_gain/"])
        await asyncio.sleep(0.3)
        c, started, _ = await voice_client(server, "kitchen")
        entities, _ = await c.list_entities_services()
        [player] = [e for e in entities if isinstance(e, MediaPlayerInfo)]
        states: list[MediaPlayerEntityState] = []
        c.subscribe_states(lambda st: states.append(st) if isinstance(st, MediaPlayerEntityState) else None)
        c.media_player_command(player.key, volume=0.3)
        c.media_player_command(player.key, command=MediaPlayerCommand.MUTE)
        got = [await until(gains, lambda m: True), await until(gains, lambda m: True)]
        assert [(m.room, m.volume, m.muted) for m in got] == [("kitchen", 0.3, False), ("kitchen", 0.3, True)]
        await asyncio.sleep(0.2)
        assert (states[-1].volume, states[-1].muted) == (pytest.approx(0.3), True)
        # a media URL plays on the kitchen's edge; the player is "playing" until the edge says it ended
        c.media_player_command(player.key, media_url=url)
        last = await until(sub, lambda m: isinstance(m, TtsAudio) and m.final)
        assert isinstance(last, TtsAudio) and last.room == "kitchen"
        await asyncio.sleep(0.2)
        assert states[-1].state.name == "PLAYING"
        await pub.publish(PlaybackStatus(room="kitchen", source="kitchen-pi", answer_id=last.answer_id, state="ended"))
        await asyncio.sleep(0.3)
        assert states[-1].state.name == "IDLE"

        # Home Assistant's wake word select: only the chosen word starts a pipeline here
        config = await c.get_voice_assistant_configuration(5.0)
        assert config.active_wake_words == ["hey_jarvis", "alexa"]
        await c.set_voice_assistant_configuration(["alexa"])
        config = await c.get_voice_assistant_configuration(5.0)
        assert config.active_wake_words == ["alexa"]
        now = server.bus.clock.now()
        await pub.publish(WakeArbitrated(room="kitchen", node="kitchen-pi", word="hey_jarvis", wake_time=now))
        await asyncio.sleep(0.3)
        assert started == []
        await pub.publish(WakeArbitrated(room="kitchen", node="kitchen-pi", word="alexa", wake_time=now + 2))
        await asyncio.sleep(0.3)
        assert started == ["alexa"]
        await c.set_voice_assistant_configuration(["ok_nabu"])
        await asyncio.sleep(0.2)
        assert "does not run" in caplog.text and server.devices["kitchen"].active_words == ["alexa"]
        gains.close()
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
