"""The Wyoming gateway without models: config, info, bad input, the satellite's protocol, the conversation path.

The stages' answers are published on the bus by the test itself (a final transcript, a wake arbitration,
a playback status) so every step the gateway takes can be checked exactly; tests/test_wyoming_voice.py
runs the same paths with the real stages.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.ping import Ping
from wyoming.satellite import RunSatellite
from wyoming.tts import Synthesize, SynthesizeVoice
from wyoming.wake import Detect
from wyoming_help import Conn, deployment, ports, running

from sensorium.bridges.wyoming.audio import AudioFormatError, AudioIn
from sensorium.bridges.wyoming.offer import Offer, phrase_of
from sensorium.pipeline.bus import Publisher, Subscriber
from sensorium.pipeline.config import ConfigError
from sensorium.pipeline.hub import Hub
from sensorium.pipeline.messages import (
    AudioChunk as BusChunk,
)
from sensorium.pipeline.messages import (
    Listen,
    Message,
    PlaybackStatus,
    Say,
    SpeakerIdentified,
    StageStats,
    TtsAudio,
    WakeArbitrated,
)
from sensorium.pipeline.messages import (
    Transcript as BusTranscript,
)

RATE = 16000


def pcm_noise(seconds: float, seed: int = 0) -> bytes:
    """Quiet noise (a real microphone never sends exact zeros)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * RATE)) * 300).astype("<i2").tobytes()


def mic_chunk(t0: float, i: int, audio: bytes) -> BusChunk:
    """The kitchen microphone's 80 ms chunk starting at byte ``i`` of ``audio``."""
    return BusChunk(time=t0 + i / 2 / RATE, room="kitchen", source="kitchen-pi", data=audio[i : i + 2560])


@contextlib.asynccontextmanager
async def stages_up(hub: Hub, *stages: str) -> AsyncIterator[Publisher]:
    """Publish ``stats`` for ``stages`` as a worker would (the gateway's liveness signal)."""
    pub = Publisher(hub.endpoints)

    async def beat() -> None:
        while True:
            for s in stages:
                await pub.publish(StageStats(stage=s, source="fake-worker", time=time.time()))
            await asyncio.sleep(0.3)

    task = asyncio.create_task(beat())
    await asyncio.sleep(0.4)
    try:
        yield pub
    finally:
        task.cancel()
        pub.close()


# ------------------------------------------------------------------------------------- config


def test_wyoming_table_errors_name_file_table_and_key(tmp_path) -> None:
    p = ports()
    addr = "ipc:///tmp/x"
    cases = [
        ({"room": "garage"}, "[wyoming] room = 'garage' is not a room of [rooms] (known: kitchen, office)"),
        ({"satellites": {"attic": 10700}}, "[wyoming] satellites.attic: not a room of [rooms]"),
        ({"stt_port": p["tts"]}, "[wyoming] tts_port"),  # services may share a port: no error (checked below)
        ({"satellites": {"kitchen": p["stt"]}}, f"[wyoming] satellites.kitchen = {p['stt']} is also the port of"),
        ({"wake_port": 70000}, "[wyoming] wake_port = 70000: expected a TCP port 1-65535"),
        ({"name": "my gateway"}, "[wyoming] name = 'my gateway': use letters, digits and '-'"),
        ({"block_ms": 5}, "[wyoming] block_ms = 5: expected 10-1000"),
        ({"max_streams": 0}, "[wyoming] max_streams = 0: expected 1-64"),
        ({"timeout": "soon"}, "[wyoming] timeout: expected a duration"),
        ({"volume": 3}, "[wyoming] unknown key 'volume'"),
    ]
    for extra, message in cases:
        if extra == {"stt_port": p["tts"]}:
            dep = deployment(tmp_path, addr, p, with_satellites=False, wyoming=extra)
            assert dep.wyoming is not None and dep.wyoming.ports()["stt"] == dep.wyoming.ports()["tts"]
            continue
        with pytest.raises(ConfigError) as err:
            deployment(tmp_path, addr, p, with_satellites="satellites" not in extra, wyoming=extra)
        assert "<test>: " in str(err.value) and message in str(err.value), (extra, str(err.value))
    # A satellite needs a microphone in its room.
    edges = {"kitchen-pi": {"room": "kitchen", "microphone": {}}, "office-pi": {"room": "office"}}
    with pytest.raises(ConfigError, match=r"satellites.office: no edge node with a microphone in this room"):
        deployment(tmp_path, addr, p, edges=edges)
    # The default room for Home Assistant's own audio is the first room.
    dep = deployment(tmp_path, addr, p)
    assert dep.wyoming is not None and dep.wyoming.room == "kitchen"
    # The stages accept the gateway's streams there (and only a bounded number of them), besides the edges.
    dep = deployment(tmp_path, addr, p, wyoming={"max_streams": 2})
    assert dep.sources() == {
        "kitchen": ("kitchen-pi", "sensorium-wake-0", "sensorium-wake-1", "sensorium-stt-0", "sensorium-stt-1"),
        "office": ("office-pi",),
    }


def test_stream_pool_hands_out_only_the_names_the_stages_accept() -> None:
    from sensorium.bridges.wyoming.gateway import PoolFull, StreamPool
    from sensorium.pipeline.clock import Clock

    pool = StreamPool("sensorium", Clock(), limit=2)
    (a, t_a), (b, _) = pool.acquire("stt"), pool.acquire("stt")
    assert (a, b) == ("sensorium-stt-0", "sensorium-stt-1")
    with pytest.raises(PoolFull, match=r"2 stt requests are running already \(\[wyoming\] max_streams\)"):
        pool.acquire("stt")
    pool.release(a, t_a + 3.0)
    again, t_again = pool.acquire("stt")
    assert again == a and t_again >= t_a + 3.5  # a reused stream jumps in time: the stages restart its state


def test_info_is_complete_for_every_role_and_the_satellites() -> None:
    offer = Offer(
        wake_words=["hey_jarvis", "alexa"],
        stt_model="tiny.en",
        languages=["en"],
        voices={"piper:en_US-joe-medium": None, "flite:slt": "flite:slt"},
    )
    info = Info.from_event(offer.info(["wake", "stt", "tts", "handle"]).event())
    artifacts = [
        *info.wake,
        *info.asr,
        *info.tts,
        *info.handle,
        *(m for p in info.wake for m in p.models),
        *(m for p in info.asr for m in p.models),
        *(v for p in info.tts for v in p.voices),
        *(m for p in info.handle for m in p.models),
    ]
    assert len(artifacts) == 4 + 2 + 1 + 2 + 1
    for a in artifacts:
        assert a.name and a.attribution.name and a.attribution.url.startswith("http") and a.installed is True
    for a in artifacts[4:]:
        assert a.languages == ["en"]  # type: ignore[attr-defined]
    assert [(m.name, m.phrase) for m in info.wake[0].models] == [("hey_jarvis", "hey jarvis"), ("alexa", "alexa")]
    assert [v.name for v in info.tts[0].voices] == ["piper:en_US-joe-medium", "flite:slt"]
    assert info.asr[0].requires_external_vad is False and info.asr[0].supports_transcript_streaming
    assert info.tts[0].supports_synthesize_streaming and info.handle[0].supports_handled_streaming
    # A port with some roles lists only those.
    only = Info.from_event(offer.info(["tts"]).event())
    assert only.tts and not (only.asr or only.wake or only.handle)
    sat = Info.from_event(offer.satellite_info("sensorium kitchen", "kitchen").event())
    assert sat.satellite is not None and sat.satellite.area == "kitchen" and sat.satellite.installed
    assert sat.satellite.active_wake_words == ["hey_jarvis", "alexa"]
    assert phrase_of("hey_jarvis_v0.1") == "hey jarvis"


# -------------------------------------------------------------------------------------- audio


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=30))
def test_audio_is_cut_into_exact_blocks_whatever_the_chunk_sizes(sizes: list[int]) -> None:
    audio = AudioIn(block=1280)
    rng = np.random.default_rng(len(sizes))
    sent = b""
    blocks: list[bytes] = []
    for n in sizes:
        data = rng.integers(-3000, 3000, n, dtype=np.int16).astype("<i2").tobytes()[: 2 * n - n % 2]  # odd cuts too
        sent += data
        blocks += audio.feed(AudioChunk(rate=RATE, width=2, channels=1, audio=data))
    assert all(len(b) == 2560 for b in blocks)
    whole = len(sent) - len(sent) % 2
    assert b"".join(blocks) + audio.flush() == sent[:whole]  # nothing lost, nothing reordered


def test_other_formats_are_converted_and_impossible_ones_refused() -> None:
    t = np.arange(48000) / 48000
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2")
    stereo = np.stack([tone, tone], axis=1).tobytes()
    audio = AudioIn(block=1600)
    out = b"".join(audio.feed(AudioChunk(rate=48000, width=2, channels=2, audio=stereo))) + audio.flush()
    pcm = np.frombuffer(out, "<i2")
    assert abs(len(pcm) - RATE) <= 2  # one second at 16 kHz
    spectrum = np.abs(np.fft.rfft(pcm[:16000]))
    assert abs(int(np.argmax(spectrum)) - 440) <= 2  # still a 440 Hz tone
    for bad, message in [
        (AudioChunk(rate=16000, width=3, channels=1, audio=b"\0" * 6), "sample width 3"),
        (AudioChunk(rate=16000, width=2, channels=6, audio=b"\0" * 24), "6 channels"),
        (AudioChunk(rate=0, width=2, channels=1, audio=b"\0" * 2), "sample rate 0"),
    ]:
        with pytest.raises(AudioFormatError, match=message):
            AudioIn(1280).feed(bad)


# ---------------------------------------------------------------------------------- bad input


async def test_describe_is_answered_at_once_on_every_port(hub: Hub, tmp_path) -> None:
    p = ports()
    dep = deployment(tmp_path, hub.endpoints.publish.removesuffix("-pub"), p)
    async with running(dep, hub.endpoints):
        for key in p:
            async with Conn(p[key]) as c:
                t0 = time.perf_counter()
                await c.send(Describe())
                ev = await c.recv(1.0)  # Home Assistant's limit
                took = time.perf_counter() - t0
                assert ev is not None and ev.type == "info", key
                info = Info.from_event(ev)
                if key in ("kitchen", "office"):
                    assert info.satellite is not None and info.satellite.area == key
                else:
                    assert getattr(info, {"stt": "asr"}.get(key, key)), key
                assert took < 0.2, (key, took)


async def test_bad_input_gets_a_clear_error_and_other_connections_keep_working(hub: Hub, tmp_path) -> None:
    p = ports()
    dep = deployment(tmp_path, hub.endpoints.publish.removesuffix("-pub"), p)
    chunk = AudioChunk(rate=RATE, width=2, channels=1, audio=pcm_noise(0.1))
    async with running(dep, hub.endpoints, down_after=1.0), stages_up(hub, "wake", "stt", "tts"):
        # An audio-chunk before audio-start: an error, and the connection still serves.
        async with Conn(p["stt"]) as c:
            await c.send(chunk, chunk)
            ev = await c.recv()
            assert ev.type == "error" and ev.data["code"] == "bad-order" and "before audio-start" in ev.data["text"]
            await c.send(Describe())
            assert (await c.recv()).type == "info"  # one error for the burst, then the answer
        cases: list[tuple[int, list[Event], str, str]] = [
            (p["stt"], [Transcribe(language="de").event()], "unsupported-language", "language 'de' is not supported"),
            (p["wake"], [Detect(names=["hey_nobody"]).event()], "unknown-wake-word", "unknown wake word 'hey_nobody'"),
            (
                p["tts"],
                [Synthesize(text="Hi.", voice=SynthesizeVoice(name="nobody")).event()],
                "unknown-voice",
                "unknown voice 'nobody' (known: piper:en_US-joe-medium)",
            ),
            (p["tts"], [Synthesize(text=" ... !? ").event()], "empty-text", "nothing to speak"),
            (p["wake"], [Synthesize(text="Hello.").event()], "wrong-port", f"it is on port {p['tts']}"),
            (
                p["stt"],
                [Transcribe().event(), AudioStart(rate=16000, width=3, channels=1).event()],
                "unsupported-audio",
                "sample width 3",
            ),
            (
                p["stt"],
                [
                    Transcribe().event(),
                    AudioStart(rate=RATE, width=2, channels=1).event(),
                    AudioChunk(rate=RATE, width=2, channels=7, audio=b"\0" * 14).event(),
                ],
                "unsupported-audio",
                "7 channels",
            ),
        ]
        for port, events, code, text in cases:
            async with Conn(port) as c, Conn(p["handle"]) as other:
                await c.send(*events)
                [err, closed] = await c.until("never", timeout=5)
                assert err.type == "error" and err.data["code"] == code and text in err.data["text"], err.data
                assert closed is None  # the request cannot go on: the connection is closed
                await other.send(Describe())
                assert (await other.recv(1.0)).type == "info"
        # A malformed event is reported, and the connection goes on.
        async with Conn(p["handle"]) as c:
            await c.send(Event(type="transcript", data={"txt": "hello"}))
            ev = await c.recv()
            assert ev.type == "error" and ev.data["code"] == "bad-event" and "'text'" in ev.data["text"]
            await c.send(Describe())
            assert (await c.recv()).type == "info"


async def test_a_stage_that_is_down_is_named_at_once(hub: Hub, tmp_path) -> None:
    p = ports()
    dep = deployment(tmp_path, hub.endpoints.publish.removesuffix("-pub"), p)
    async with running(dep, hub.endpoints, down_after=1.0):
        await asyncio.sleep(1.0)
        for port, events, stage in [
            (p["stt"], [Transcribe(), AudioStart(rate=RATE, width=2, channels=1)], "stt"),
            (p["wake"], [Detect(), AudioStart(rate=RATE, width=2, channels=1)], "wake"),
            (p["tts"], [Synthesize(text="Hello there.")], "tts"),
        ]:
            async with Conn(port) as c:
                t0 = time.perf_counter()
                await c.send(*events)
                [err, _] = await c.until("never", timeout=5)
                assert err.data["code"] == "stage-down" and f"the {stage} stage is not running" in err.data["text"]
                assert time.perf_counter() - t0 < 0.5  # known down: no waiting out the timeout


async def test_a_client_that_drops_mid_stream_frees_its_stream(hub: Hub, tmp_path) -> None:
    p = ports()
    dep = deployment(tmp_path, hub.endpoints.publish.removesuffix("-pub"), p)
    listens = Subscriber(hub.endpoints, ["listen/"])
    async with running(dep, hub.endpoints, down_after=1.0), stages_up(hub, "stt"):
        for _ in range(2):
            async with Conn(p["stt"]) as c:
                await c.send(Transcribe(), AudioStart(rate=RATE, width=2, channels=1))
                for i in range(5):
                    await c.send(AudioChunk(rate=RATE, width=2, channels=1, audio=pcm_noise(0.08, i)))
                opened = await listens.recv_timeout(3)
            # gone without audio-stop
            dropped = await listens.recv_timeout(3)
            assert isinstance(opened, Listen) and opened.action == "open" and opened.request_id
            assert isinstance(dropped, Listen) and dropped.action == "drop"
            assert dropped.request_id == opened.request_id and dropped.node == opened.node == "sensorium-stt-0"
    listens.close()


async def test_a_connection_reset_by_the_client_is_a_quiet_disconnect(hub: Hub, tmp_path) -> None:
    """Home Assistant resets connections (its probes): no task exception left for asyncio to print as a traceback,
    and the port keeps serving."""
    import gc
    import socket
    import struct

    p = ports()
    dep = deployment(tmp_path, hub.endpoints.publish.removesuffix("-pub"), p)
    loop = asyncio.get_running_loop()
    unhandled: list[dict] = []
    loop.set_exception_handler(lambda _loop, ctx: unhandled.append(ctx))
    try:
        async with running(dep, hub.endpoints), stages_up(hub, "stt"):
            for port in (p["stt"], p["kitchen"]):
                for _ in range(3):
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    await asyncio.sleep(0.1)  # the server's handler is reading
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()  # RST, not FIN
                await asyncio.sleep(0.3)
                gc.collect()  # a task whose exception nobody retrieved reports it when collected
                async with Conn(port) as c:
                    await c.send(Describe())
                    assert (await c.recv()).type == "info"
    finally:
        loop.set_exception_handler(None)
    assert not [u for u in unhandled if isinstance(u.get("exception"), ConnectionError)], unhandled


# ---------------------------------------------------------------------------------- satellite


async def test_satellite_runs_home_assistants_pipeline_for_the_room_that_won(hub: Hub, tmp_path) -> None:
    """The winning room's satellite: run-pipeline, its audio from the wake word, audio-stop at our endpoint,
    Home Assistant's answer on the room's loudspeaker, played when the edge says so; the other room: nothing."""
    p = ports()
    dep = deployment(tmp_path, hub.endpoints.publish.removesuffix("-pub"), p)
    bus = Subscriber(hub.endpoints, ["listen/", "tts_audio/kitchen/"])
    pub = Publisher(hub.endpoints)
    room_audio = pcm_noise(1.2, seed=7)
    async with running(dep, hub.endpoints) as gw, Conn(p["kitchen"]) as ha, Conn(p["office"]) as ha_office:
        await ha.send(RunSatellite(), Describe())
        await ha_office.send(RunSatellite())
        info = Info.from_event(await ha.recv())
        assert info.satellite is not None and info.satellite.area == "kitchen"
        await asyncio.sleep(0.3)
        t0 = 5000.0
        for i in range(0, len(room_audio), 2560):  # the kitchen microphone streams
            await pub.publish(
                BusChunk(time=t0 + i / 2 / RATE, room="kitchen", source="kitchen-pi", data=room_audio[i : i + 2560])
            )
        await asyncio.sleep(0.2)
        wake_time = t0 + 0.5
        await pub.publish(
            WakeArbitrated(
                room="kitchen", node="kitchen-pi", word="hey_jarvis", wake_time=wake_time,
                losers=["office-pi"], loser_rooms=["office"], time=wake_time,
            )
        )  # fmt: skip
        run = await ha.recv()
        assert run.type == "run-pipeline" and run.data["start_stage"] == "asr" and run.data["end_stage"] == "tts"
        claim = await bus.recv_timeout(3)
        assert isinstance(claim, Listen) and (claim.action, claim.room, claim.node) == ("open", "kitchen", "kitchen-pi")
        assert claim.time == wake_time and claim.request_id
        got = b""
        while len(got) < len(room_audio) - 16000:
            ev = await ha.recv()
            assert ev.type == "audio-chunk" and ev.data["rate"] == RATE
            got += ev.payload
        assert got == room_audio[16000:]  # exactly the audio from the wake word on
        # Our stt stage's final transcript ends the command: audio-stop at once.
        t_final = time.perf_counter()
        await pub.publish(
            BusTranscript(room="kitchen", final=True, text="turn on the lights", request_id=claim.request_id,
                          speaker="alice", speaker_score=0.8, t1=wake_time + 1)
        )  # fmt: skip
        stop = await ha.recv()
        assert stop.type == "audio-stop" and time.perf_counter() - t_final < 0.2
        # Home Assistant answers: its audio goes to the kitchen's loudspeaker, ping is answered meanwhile.
        answer = pcm_noise(0.5, seed=3)
        await ha.send(Transcript(text="turn on the lights"), Synthesize(text="Turned on the lights."))
        await ha.send(AudioStart(rate=22050, width=2, channels=1))
        for i in range(0, len(answer), 2048):
            await ha.send(AudioChunk(rate=22050, width=2, channels=1, audio=answer[i : i + 2048]))
        await ha.send(AudioStop())
        tts = []
        while not (tts and tts[-1].final):
            msg = await bus.recv_timeout(3)
            assert isinstance(msg, TtsAudio) and msg.room == "kitchen"
            tts.append(msg)
        assert b"".join(m.data for m in tts) == answer and tts[0].rate == 22050
        assert tts[-1].text == "Turned on the lights." and len({m.answer_id for m in tts}) == 1
        t_ping = time.perf_counter()
        await ha.send(Ping(text="still there?"))
        pong = await ha.recv()
        assert pong.type == "pong" and pong.data["text"] == "still there?" and time.perf_counter() - t_ping < 0.2
        await pub.publish(
            PlaybackStatus(room="kitchen", source="kitchen-pi", answer_id=tts[0].answer_id, state="ended")
        )
        played = await ha.recv()
        assert played.type == "played"
        # The question Home Assistant will ask its conversation agent is known: room and speaker.
        asked = gw.recall("turn on the lights")
        assert asked is not None and (asked.room, asked.speaker) == ("kitchen", "alice")
        # The office heard the same wake word, lost, and started nothing in Home Assistant.
        assert gw.satellites["office"].pipelines == 0 and gw.satellites["kitchen"].pipelines == 1
        with pytest.raises(TimeoutError):
            await ha_office.recv(0.3)
        # Home Assistant reconnects: the new connection replaces the old one.
        async with Conn(p["kitchen"]) as ha2:
            assert await ha.recv(2) is None
            await ha2.send(Describe())
            assert (await ha2.recv()).type == "info"
    bus.close()
    pub.close()


async def test_home_assistant_leaving_mid_pipeline_releases_the_rooms_utterance(hub: Hub, tmp_path) -> None:
    """The room logic the ESPHome device shares: HA gone mid-run → the claimed utterance is dropped at once."""
    p = ports()
    dep = deployment(tmp_path, hub.endpoints.publish.removesuffix("-pub"), p)
    bus = Subscriber(hub.endpoints, ["listen/"])
    pub = Publisher(hub.endpoints)
    async with running(dep, hub.endpoints) as gw:
        async with Conn(p["kitchen"]) as ha:
            await ha.send(RunSatellite())
            await asyncio.sleep(0.3)
            await pub.publish(WakeArbitrated(room="kitchen", node="kitchen-pi", word="hey_jarvis", wake_time=10.0))
            assert (await ha.recv()).type == "run-pipeline"
            claim = await bus.recv_timeout(3)
            assert isinstance(claim, Listen) and claim.action == "open"
        t_gone = time.perf_counter()
        drop = await bus.recv_timeout(3)
        assert isinstance(drop, Listen) and (drop.action, drop.request_id) == ("drop", claim.request_id)
        assert time.perf_counter() - t_gone < 1.0 and gw.satellites["kitchen"].run is None
    bus.close()
    pub.close()


async def test_home_assistants_stt_gets_the_satellites_transcript(hub: Hub, tmp_path) -> None:
    """Home Assistant relays the satellite's audio to our STT: the audio is recognised and the stage's own
    transcript of that command comes back (no second decode), with the speaker."""
    p = ports()
    dep = deployment(tmp_path, hub.endpoints.publish.removesuffix("-pub"), p, wyoming={"speaker_prefix": True})
    bus = Subscriber(hub.endpoints, ["listen/", "audio/kitchen/sensorium"])
    pub = Publisher(hub.endpoints)
    room_audio = pcm_noise(1.5, seed=11)
    async with running(dep, hub.endpoints, down_after=1.0) as gw, stages_up(hub, "stt"), Conn(p["kitchen"]) as ha:
        await ha.send(RunSatellite())
        await asyncio.sleep(0.3)
        t0 = 7000.0
        for i in range(0, len(room_audio), 2560):
            await pub.publish(
                BusChunk(time=t0 + i / 2 / RATE, room="kitchen", source="kitchen-pi", data=room_audio[i : i + 2560])
            )
        await asyncio.sleep(0.2)
        await pub.publish(WakeArbitrated(room="kitchen", node="kitchen-pi", word="hey_jarvis", wake_time=t0 + 0.3))
        assert (await ha.recv()).type == "run-pipeline"
        claim = await bus.recv_timeout(3)
        relayed = b""
        while len(relayed) < 19200:
            relayed += (await ha.recv()).payload
        async with Conn(p["stt"]) as stt:  # Home Assistant's STT client, 10 ms chunks as it sends them
            await stt.send(Transcribe(language="en"), AudioStart(rate=RATE, width=2, channels=1))
            for i in range(0, len(relayed), 320):
                await stt.send(AudioChunk(rate=RATE, width=2, channels=1, audio=relayed[i : i + 320]))
            await asyncio.sleep(0.2)
            await pub.publish(
                BusTranscript(room="kitchen", final=True, text="what time is it", request_id=claim.request_id,
                              speaker="alice", speaker_score=0.81)
            )  # fmt: skip
            await stt.send(AudioStop())
            events = await stt.until("transcript")
        tr = events[-1]
        assert tr.data["text"] == "[alice] what time is it" and tr.data["speaker"] == "alice"
        assert tr.data["speaker_score"] == 0.81
        # Recognised: the relayed audio was not published again as a stream of its own.
        assert await bus.recv_timeout(0.3) is None
        assert gw.recall("[alice] what time is it").room == "kitchen"
    bus.close()
    pub.close()


async def test_a_final_without_its_speaker_waits_for_it_when_speaker_id_is_up(hub: Hub, tmp_path) -> None:
    """The final left the stt stage just before speaker ID answered: Home Assistant's transcript still names
    the speaker. With no speaker stage reporting, nothing is waited for."""
    p = ports()
    dep = deployment(tmp_path, hub.endpoints.publish.removesuffix("-pub"), p, wyoming={"speaker_prefix": True})
    listens = Subscriber(hub.endpoints, ["listen/"])
    async with running(dep, hub.endpoints, down_after=1.0), stages_up(hub, "stt", "speaker") as pub:
        async with Conn(p["stt"]) as stt:
            await stt.send(Transcribe(language="en"), AudioStart(rate=RATE, width=2, channels=1))
            await stt.send(AudioChunk(rate=RATE, width=2, channels=1, audio=pcm_noise(0.5, 3)))
            claim = await listens.recv_timeout(3)
            await stt.send(AudioStop())
            await pub.publish(
                BusTranscript(room="kitchen", utterance_id="u1", final=True, text="lights on",
                              request_id=claim.request_id)
            )  # fmt: skip
            await asyncio.sleep(0.15)
            await pub.publish(SpeakerIdentified(room="kitchen", utterance_id="u1", person="bob", score=0.9))
            t0 = time.perf_counter()
            events = await stt.until("transcript")
        assert events[-1].data["text"] == "[bob] lights on" and events[-1].data["speaker"] == "bob"
        assert time.perf_counter() - t0 < 0.5  # it came as soon as the speaker did
    async with running(dep, hub.endpoints, down_after=1.0), stages_up(hub, "stt") as pub:
        async with Conn(p["stt"]) as stt:
            await stt.send(Transcribe(language="en"), AudioStart(rate=RATE, width=2, channels=1))
            await stt.send(AudioChunk(rate=RATE, width=2, channels=1, audio=pcm_noise(0.5, 3)))
            claim = await listens.recv_timeout(3)
            while claim is not None and claim.action != "open":  # the first request's close
                claim = await listens.recv_timeout(3)
            await stt.send(AudioStop())
            await pub.publish(
                BusTranscript(room="kitchen", utterance_id="u2", final=True, text="lights off",
                              request_id=claim.request_id)
            )  # fmt: skip
            events = await stt.until("transcript")
        assert events[-1].data["text"] == "lights off" and "speaker" not in events[-1].data
    listens.close()


# ------------------------------------------------------------------------------- conversation


async def test_conversation_is_answered_by_the_agent_on_the_hub(hub: Hub, tmp_path) -> None:
    from sensorium.apps.agent import run_builtin_agent

    p = ports()
    dep = deployment(tmp_path, hub.endpoints.publish.removesuffix("-pub"), p)
    seen = Subscriber(hub.endpoints, ["transcript/", "say/"])
    stop = asyncio.Event()
    agent = asyncio.create_task(run_builtin_agent(hub.endpoints, stop=stop))
    try:
        async with running(dep, hub.endpoints) as gw:
            await asyncio.sleep(0.5)
            async with Conn(p["handle"]) as c:
                await c.send(Transcript(text="what time is it", context={"conversation_id": "c1"}))
                events = await c.until("handled", "not-handled")
            handled = events[-1]
            assert handled.type == "handled" and handled.data["text"].startswith("It is ")
            assert handled.data["context"] == {"conversation_id": "c1"}
            assert [e.type for e in events] == ["handled-start", "handled-chunk", "handled"]
            question = await seen.recv_timeout(2)
            say = await seen.recv_timeout(2)
            assert isinstance(question, BusTranscript) and question.reply_to and question.room == "kitchen"
            assert isinstance(say, Say) and say.reply_to == question.reply_to and say.text == handled.data["text"]
            # A question whose text came from a satellite carries that room and speaker.
            gw.remember("[bob] say good night", "office", "bob", 0.77)
            async with Conn(p["handle"]) as c:
                await c.send(Transcript(text="[bob] say good night"))
                events = await c.until("handled", "not-handled")
            assert events[-1].data["text"] == "Good night"
            question = await seen.recv_timeout(2)
            assert (question.room, question.speaker, question.text) == ("office", "bob", "say good night")
            # Home Assistant's own speech-to-text results are not questions for the agent.
            while await seen.recv_timeout(0.2) is not None:
                pass
            pub = Publisher(hub.endpoints)
            await asyncio.sleep(0.3)  # a new publisher's first messages are lost until it is connected
            await pub.publish(BusTranscript(room="kitchen", final=True, text="say hello", request_id="r1"))
            assert isinstance(await seen.recv_timeout(2), BusTranscript)
            assert await seen.recv_timeout(1.5) is None  # no Say
            pub.close()
    finally:
        stop.set()
        await agent
        seen.close()


async def test_conversation_without_an_agent_says_so(hub: Hub, tmp_path) -> None:
    p = ports()
    dep = deployment(tmp_path, hub.endpoints.publish.removesuffix("-pub"), p, wyoming={"timeout": "1s"})
    async with running(dep, hub.endpoints), Conn(p["handle"]) as c:
        t0 = time.perf_counter()
        await c.send(Transcript(text="what time is it"))
        [ev] = await c.until("handled", "not-handled")
        assert ev.type == "not-handled" and "No agent answered within 1 s" in ev.data["text"]
        assert 0.9 < time.perf_counter() - t0 < 2.0


async def test_satellite_without_home_assistant_leaves_the_room_to_sensorium(hub: Hub, tmp_path) -> None:
    p = ports()
    dep = deployment(tmp_path, hub.endpoints.publish.removesuffix("-pub"), p)
    listens = Subscriber(hub.endpoints, ["listen/"])
    pub = Publisher(hub.endpoints)
    async with running(dep, hub.endpoints) as gw:
        await asyncio.sleep(0.3)
        await pub.publish(WakeArbitrated(room="kitchen", node="kitchen-pi", word="hey_jarvis", wake_time=100.0))
        assert await listens.recv_timeout(0.5) is None  # nothing claimed: our own agent answers
        async with Conn(p["kitchen"]) as ha:  # connected, but no run-satellite yet: not ready
            await asyncio.sleep(0.2)
            await pub.publish(WakeArbitrated(room="kitchen", node="kitchen-pi", word="hey_jarvis", wake_time=110.0))
            assert await listens.recv_timeout(0.5) is None
            with pytest.raises(TimeoutError):
                await ha.recv(0.2)
        assert gw.satellites["kitchen"].pipelines == 0
    listens.close()
    pub.close()


def _msgs(xs: list[Message], cls: type) -> list:
    return [m for m in xs if isinstance(m, cls)]


# ---------------------------------------------------------------------------------- zeroconf


@pytest.mark.slow
async def test_every_port_is_announced_over_zeroconf(hub: Hub, tmp_path) -> None:
    """Home Assistant discovers ``_wyoming._tcp`` services: one name per port, resolvable to the port."""
    from zeroconf import ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    p = ports()
    dep = deployment(tmp_path, hub.endpoints.publish.removesuffix("-pub"), p, wyoming={"zeroconf": True})
    found: set[str] = set()

    def seen(zeroconf: object, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Added and name.startswith("sensorium-"):
            found.add(name)

    expect = {f"sensorium-{what}._wyoming._tcp.local." for what in ("wake", "stt", "tts", "handle")}
    expect |= {f"sensorium-satellite-{room}._wyoming._tcp.local." for room in ("kitchen", "office")}
    async with running(dep, hub.endpoints) as gw:
        assert len(gw.zeroconf) == 6
        zc = AsyncZeroconf()
        browser = AsyncServiceBrowser(zc.zeroconf, "_wyoming._tcp.local.", handlers=[seen])
        try:
            async with asyncio.timeout(10):
                while not expect <= found:
                    await asyncio.sleep(0.1)
            info = AsyncServiceInfo("_wyoming._tcp.local.", "sensorium-stt._wyoming._tcp.local.")
            assert await info.async_request(zc.zeroconf, 3000)
            assert info.port == p["stt"] and info.parsed_addresses()
        finally:
            await browser.async_cancel()
            await zc.async_close()
    assert gw.zeroconf == []  # withdrawn when the gateway stops


# --------------------------------------------------------------------------------------- process


@pytest.mark.slow
async def _stop(proc: asyncio.subprocess.Process, sig: int) -> tuple[bytes, bytes]:
    """Send ``sig`` and wait up to 20 s for the command to end (killed if it has not): its stdout and stderr."""
    try:
        proc.send_signal(sig)
        return await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_the_command_serves_until_interrupted_and_refuses_a_bad_config(hub: Hub, tmp_path) -> None:
    import signal

    p = ports()
    addr = hub.endpoints.publish.removesuffix("-pub")
    config = tmp_path / "deploy.toml"
    satellites = "\n".join(f"{room} = {p[room]}" for room in ("kitchen", "office"))
    config.write_text(
        f'[hub]\naddress = "{addr}"\n[rooms.kitchen]\n[rooms.office]\n'
        '[edges.kitchen-pi]\nroom = "kitchen"\nmicrophone = {}\n[edges.office-pi]\nroom = "office"\nmicrophone = {}\n'
        f'[wyoming]\nhost = "127.0.0.1"\nzeroconf = false\nwake_port = {p["wake"]}\nstt_port = {p["stt"]}\n'
        f"tts_port = {p['tts']}\nhandle_port = {p['handle']}\n[wyoming.satellites]\n{satellites}\n"
    )
    cmd = [sys.executable, "-m", "sensorium", "wyoming", "--config", str(config)]
    pipe = asyncio.subprocess.PIPE

    def as_a_background_job() -> None:  # a script's `cmd &` starts it with SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def serving() -> Info:
        """The command's TTS port once it answers ``describe``."""
        async with asyncio.timeout(30):
            while True:
                try:
                    async with Conn(p["tts"]) as c:
                        await c.send(Describe())
                        return Info.from_event(await c.recv())
                except OSError:
                    await asyncio.sleep(0.2)

    proc = await asyncio.create_subprocess_exec(*cmd, stdout=pipe, stderr=pipe, preexec_fn=as_a_background_job)
    try:
        info = await serving()
        assert info.tts and info.tts[0].voices
        async with Conn(p["tts"]) as c:  # no worker on this hub: said clearly, not a hang
            await c.send(Synthesize(text="Hello."))
            err = await c.recv(10)
        assert err.type == "error" and "the tts stage is not running" in err.data["text"]
    finally:
        out, errs = await _stop(proc, signal.SIGINT)
    assert proc.returncode == 130 and b"Traceback" not in errs, errs
    assert f"tts {p['tts']}".encode() in out and f"kitchen {p['kitchen']}".encode() in out
    # `kill` or `docker stop` (SIGTERM): a clean stop too (ports closed, names withdrawn), exit 0
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=pipe, stderr=pipe)
    try:
        await serving()
    finally:
        _, errs = await _stop(proc, signal.SIGTERM)
    assert proc.returncode == 0 and b"Traceback" not in errs, errs
    # A bad table: a clear message naming the key, exit code 2.
    config.write_text(config.read_text().replace(f"kitchen = {p['kitchen']}", "garage = 10700"))
    bad = await asyncio.create_subprocess_exec(*cmd, stdout=pipe, stderr=pipe)
    _, errs = await asyncio.wait_for(bad.communicate(), 60)
    assert bad.returncode == 2 and b"[wyoming] satellites.garage: not a room of [rooms]" in errs, errs
