"""A room that hears its own loudspeaker: the edge sends what it played, the wake stage never wakes on it but a
person still can over it, and the edge's echo canceller removes the speaker from the microphone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from sensorium.edge.agent import EdgeAgent
from sensorium.edge.echo import ReferenceTap
from sensorium.evaluation.echo import OWN_VOICE, RATE, Scene, Span, mix, music, person_phrase, write_scene
from sensorium.evaluation.media import speech
from sensorium.nodes.wake import WakeStage
from sensorium.pipeline.aec import make_canceller
from sensorium.pipeline.bus import Subscriber
from sensorium.pipeline.config import ConfigError, from_dict
from sensorium.pipeline.hub import Hub
from sensorium.pipeline.messages import AudioChunk, InputError, Message, WakeDetected
from sensorium.pipeline.stage import StageContext

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "echo"
ROOM, NODE = "kitchen", "kitchen-pi"
SELF = "Hey Jarvis is my name. You can ask me about the weather, timers and the lights."
PLAIN = "Tomorrow will be cloudy with a high of fourteen degrees and light rain in the afternoon."


def scene(ser_db: float = 0.0) -> Scene:
    """An answer that says the wake word, a pause, another answer with a person's "hey jarvis, stop" over it."""
    own = speech(SELF, OWN_VOICE, CACHE)
    plain = speech(PLAIN, OWN_VOICE, CACHE)
    pause = np.zeros(2 * RATE, np.int16)
    played = np.concatenate([pause[:RATE], own, pause, plain, pause])
    barge_at = (RATE + len(own) + len(pause)) / RATE + 1.5
    person, wake_end = person_phrase(CACHE, "flite:kal16", "hey jarvis", "stop")
    spans = [Span("barge", barge_at, barge_at + len(person) / RATE, "hey jarvis, stop", wake_end=barge_at + wake_end)]
    return Scene(mix(played, [(barge_at, person)], ser_db, seed=3), played, spans, ser_db)


def edge_chunks(sc: Scene, t0: float, reference: bool) -> list[AudioChunk]:
    tap = ReferenceTap()
    out = []
    for start in range(0, len(sc.mic), 1280):
        t = t0 + start / RATE
        data = sc.mic[start : start + 1280].tobytes()
        tap.add(t, sc.played[start : start + 1280], join=False)
        ref = tap.take(t, len(data) // 2) if reference else b""
        out.append(AudioChunk(time=t, room=ROOM, source=NODE, data=data, reference=ref))
    return out


async def wake_on(msgs: list[AudioChunk], **opts: object) -> tuple[list[Message], WakeStage]:
    out: list[Message] = []

    async def emit(m: Message) -> None:
        out.append(m)

    stage = WakeStage(
        StageContext(name="wake", worker="test", options=WakeStage.Options(**opts), rooms=(ROOM,), emit=emit)
    )
    await stage.start()
    for m in msgs:
        await stage.handle(m)
    return out, stage


def test_reference_tap_cuts_what_played_sample_aligned() -> None:
    tap = ReferenceTap(16000)
    block = np.arange(1, 321, dtype=np.int16)
    tap.add(100.0, block)
    tap.add(100.02, block * 2)
    assert tap.take(99.0, 160) == b""  # before anything played
    got = np.frombuffer(tap.take(100.01, 320), "<i2")
    assert np.array_equal(got[:160], block[160:]) and np.array_equal(got[160:], block[:160] * 2)
    tail = np.frombuffer(tap.take(100.03, 640), "<i2")
    assert np.array_equal(tail[:160], block[160:] * 2) and not tail[160:].any()  # silence after the end
    assert tap.take(100.05, 160) == b""
    tap.add(0.0, np.ones(480, np.int16), rate=48000)  # the player's rate: resampled to the tap's
    assert len(np.frombuffer(tap.take(0.0, 160), "<i2")) == 160


@pytest.mark.parametrize("kind", ["nlms", "speex"])
def test_echo_canceller_removes_the_speaker_and_keeps_the_person(kind: str) -> None:
    played = np.concatenate([speech(PLAIN, OWN_VOICE, CACHE), music(8.0, seed=1)])
    person, _ = person_phrase(CACHE, "flite:kal16", "hey jarvis", "stop")
    at = len(played) / RATE - 3.0
    echo_only = mix(played, [], 0.0, seed=4)
    both = mix(played, [(at, person)], 0.0, seed=4)
    for mic, name in ((echo_only, "echo"), (both, "echo+person")):
        aec = make_canceller(kind)
        out = np.concatenate([aec.process(mic[i : i + 1280], played[i : i + 1280]) for i in range(0, len(mic), 1280)])
        assert len(out) == len(mic)
        h = len(mic) // 2  # after it learnt the room
        reduction = 10 * np.log10(np.sum(mic[h:].astype(float) ** 2) / np.sum(out[h:].astype(float) ** 2))
        if name == "echo":
            assert reduction > (20.0 if kind == "speex" else 10.0), reduction
            cleaned_echo = out
        else:
            # what is left beyond the cancelled echo is the person, nearly whole
            a, b = int(at * RATE), int(at * RATE) + len(person)
            left = np.sum((out[a:b].astype(float) - cleaned_echo[a:b]) ** 2)
            heard = np.sum((both[a:b].astype(float) - echo_only[a:b]) ** 2)
            assert 0.5 < left / heard < 1.5
    with pytest.raises(ValueError, match="reference has 3 samples, the microphone 4"):
        make_canceller(kind).process(np.zeros(4, np.int16), np.zeros(3, np.int16))


async def test_wake_drops_the_rooms_own_voice_and_still_hears_a_barge_in() -> None:
    sc = scene(0.0)
    t0 = time.time() - 60
    barge = sc.spans[0]
    before, _ = await wake_on(edge_chunks(sc, t0, reference=False), playback_threshold=0.0, self_reject=False)
    after, stage = await wake_on(edge_chunks(sc, t0, reference=True))
    said = [round(m.time - t0, 1) for m in before if isinstance(m, WakeDetected)]
    # today: the answer saying "Hey Jarvis" wakes the room, and the person does too
    assert any(t < barge.start for t in said), said
    assert any(barge.wake_end - 0.5 <= t <= barge.wake_end + 1.5 for t in said), said
    heard = [round(m.time - t0, 1) for m in after if isinstance(m, WakeDetected)]
    assert len(heard) == 1 and barge.wake_end - 0.5 <= heard[0] <= barge.wake_end + 1.5, heard
    assert stage.rejected["own_voice"] >= 1


async def test_wake_bar_while_playing_is_lower_when_the_edge_cancelled_the_echo() -> None:
    _, stage = await wake_on([], threshold=0.5, playback_threshold=0.8, cancelled_threshold=0.65)
    assert stage.playing_threshold_of("hey_jarvis") == 0.8
    assert stage.playing_threshold_of("hey_jarvis", cancelled=True) == 0.65
    _, stage = await wake_on([], threshold=0.5, playback_threshold=0.8, cancelled_threshold=0.0)
    assert stage.playing_threshold_of("hey_jarvis", cancelled=True) == 0.8
    with pytest.raises(ValueError, match="cancelled_threshold must be in"):
        await wake_on([], cancelled_threshold=1.5)


async def test_wake_refuses_a_reference_of_the_wrong_length() -> None:
    msg = AudioChunk(time=time.time(), room=ROOM, source=NODE, data=b"\0\0" * 1280, reference=b"\1\0" * 10)
    out, stage = await wake_on([msg])
    errors = [m for m in out if isinstance(m, InputError)]
    assert errors and "reference holds 20 bytes, the audio 2560" in errors[0].reason
    assert stage.streams == 1  # the stream goes on


async def test_edge_reads_a_room_that_hears_its_speaker(hub: Hub, hub_address: str, tmp_path: Path) -> None:
    """The real edge agent reads the mixed microphone WAV, sends what the speaker played beside it and, with
    ``echo_cancel``, a microphone with the speaker's echo removed."""
    sc = scene(-10.0)
    sc = Scene(sc.mic[: 6 * RATE], sc.played[: 6 * RATE], [], sc.ser_db)  # the first answer is enough here
    paths = write_scene(sc, tmp_path)
    got: dict[bool, list[AudioChunk]] = {}
    for cancel in (False, True):
        mic = {"file": str(paths["mic"]), "reference_file": str(paths["played"]), "echo_cancel": cancel}
        dep = from_dict(
            {
                "hub": {"address": hub_address, "heartbeat": 0.1, "down_after": 0.5},
                "rooms": {ROOM: {}},
                "edges": {NODE: {"room": ROOM, "microphone": mic}},
            },
            {},
        )
        sub = Subscriber(hub.endpoints, [f"audio/{ROOM}/"])
        chunks: list[AudioChunk] = []

        async def receive(sub: Subscriber = sub, into: list[AudioChunk] = chunks) -> None:
            async for m in sub:
                if isinstance(m, AudioChunk):
                    into.append(m)

        rx = asyncio.create_task(receive())
        await asyncio.sleep(0.2)
        await asyncio.wait_for(EdgeAgent(dep, NODE, speed=4.0).run(once=True), 30)
        await asyncio.sleep(0.3)
        rx.cancel()
        sub.close()
        got[cancel] = chunks
    plain, cancelled = got[False], got[True]
    ref = np.concatenate([c.reference_pcm() if c.reference else np.zeros(len(c.pcm()), np.int16) for c in plain])
    assert np.array_equal(ref, sc.played[: len(ref)])  # what the speaker played, sample for sample
    assert np.array_equal(np.concatenate([c.pcm() for c in plain]), sc.mic[: len(ref)])
    assert all(c.echo_cancelled for c in cancelled) and not any(c.echo_cancelled for c in plain)
    raw = np.concatenate([c.pcm() for c in plain]).astype(float)
    clean = np.concatenate([c.pcm() for c in cancelled]).astype(float)
    h = len(raw) // 2
    assert 10 * np.log10(np.sum(raw[h:] ** 2) / np.sum(clean[h:] ** 2)) > 6.0  # the echo, 10 dB over speech, is gone


def test_doctor_says_which_defences_a_room_uses(tmp_path: Path) -> None:
    from sensorium.cli.doctor import Doctor

    write_scene(Scene(np.zeros(RATE, np.int16), np.zeros(RATE, np.int16)), tmp_path, "mic")
    mic = {"file": str(tmp_path / "mic.mic.wav"), "reference_file": str(tmp_path / "mic.played.wav")}
    raw = {
        "hub": {"address": f"ipc://{tmp_path}/hub"},
        "rooms": {ROOM: {}, "hall": {}},
        "edges": {
            NODE: {"room": ROOM, "microphone": {**mic, "echo_cancel": True}, "playback": {"wav_dir": str(tmp_path)}},
            "hall-pi": {"room": "hall", "microphone": {"file": str(tmp_path / "mic.mic.wav")}},
        },
        "stages": {"wake": {"playback_threshold": 0.9}},
        "workers": {"w": {"stages": ["wake"]}},
    }
    dep = from_dict(raw, {"wake": WakeStage.Options})
    found = {f.check: f for f in Doctor(dep, None, hub_timeout=0.2, load_models=False).run()}
    echo = found[f"echo {NODE}"]
    assert echo.status == "PASS", echo
    assert "wake bar while playing 0.90; 0.65 when cancelled" in echo.detail and "echo cancellation on" in echo.detail
    assert "own-voice wakes dropped" in echo.detail and "mic.played.wav" in echo.detail
    assert "echo cancellation on (speex, 256 ms" in echo.detail and "no own-voice print" in echo.detail
    assert found["echo hall-pi"].detail == "room hall has no speaker: nothing to hear of its own"


async def test_player_hands_what_it_plays_to_the_tap(tmp_path: Path) -> None:
    """The live path: every block the player writes reaches the tap at the hub time it leaves the speaker."""
    from sensorium.edge.playback import Player, WavSink
    from sensorium.pipeline.clock import Clock
    from sensorium.pipeline.config import PlaybackConfig
    from sensorium.pipeline.messages import TtsAudio

    pcm = speech(PLAIN, OWN_VOICE, CACHE)
    tap = ReferenceTap(16000)
    statuses: list[Message] = []

    async def publish(m: Message) -> None:
        statuses.append(m)

    cfg = PlaybackConfig(wav_dir=str(tmp_path), rate=16000)
    player = Player(cfg, ROOM, NODE, Clock(), publish, sink=WavSink(tmp_path, 16000), tap=tap)
    half = len(pcm) // 2
    for i, part in enumerate((pcm[:half], pcm[half:])):
        await player.feed(TtsAudio(room=ROOM, answer_id="a1", chunk=i, final=i == 1, rate=16000, data=part.tobytes()))
    async with asyncio.timeout(30):
        await player.wait_idle()
    start = player.first_audio["a1"]
    await player.close()
    assert tap.added == len(pcm)
    heard = np.frombuffer(tap.take(start - 0.001, len(pcm) + 32), "<i2")
    # what played, sample for sample, from within a millisecond of the time it started
    assert any(np.array_equal(heard[k : k + len(pcm)], pcm) for k in range(33)), "not contiguous or not aligned"
    assert tap.take(start - 1.0, 8000) == b""


def test_edge_names_a_bad_echo_canceller_setting(tmp_path: Path) -> None:
    write_scene(Scene(np.zeros(RATE, np.int16), np.zeros(RATE, np.int16)), tmp_path, "mic")
    mic = {"file": str(tmp_path / "mic.mic.wav"), "reference_file": str(tmp_path / "mic.played.wav")}

    def edge(**extra: object) -> EdgeAgent:
        raw = {"rooms": {ROOM: {}}, "edges": {NODE: {"room": ROOM, "microphone": {**mic, **extra}}}}
        return EdgeAgent(from_dict(raw, {}), NODE)

    assert type(edge(echo_cancel=True).aec).__name__ == "SpeexEchoCanceller"  # the default: speexdsp
    assert type(edge(echo_cancel=True, echo_canceller="nlms").aec).__name__ == "EchoCanceller"
    assert edge(echo_canceller="nlms").aec is None  # echo_cancel off
    with pytest.raises(ValueError, match=r"\[edges.kitchen-pi.microphone\] echo_tail_ms must be 16–2000, got 5"):
        edge(echo_cancel=True, echo_tail_ms=5)
    with pytest.raises(ConfigError, match="echo_canceller"):
        edge(echo_cancel=True, echo_canceller="webrtc")
