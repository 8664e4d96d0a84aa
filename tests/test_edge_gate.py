"""Local wake gating on real synthesized speech (Piper joe, flite slt): nothing streams until "hey
jarvis", then the pre-roll and the command stream, and the hub's own detector fires on what streamed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from sensorium.edge.wake_gate import WakeGate
from sensorium.models.wakeword import WakeWordModel

try:  # tests/ is a plain folder on sys.path; works too if it becomes a package
    from media import concat, mix, noise, speech
except ImportError:
    from tests.media import concat, mix, noise, speech

RATE = 16000
BLOCK = 1280
T0 = 1_000_000.0
OTHER = "The weather is lovely today and the garden looks green."
COMMAND = "Hey Jarvis, turn on the kitchen lights."


def run_gate(gate: WakeGate, pcm: np.ndarray) -> list[tuple[float, bytes]]:
    out: list[tuple[float, bytes]] = []
    for i in range(0, len(pcm), BLOCK):
        out += gate.process(T0 + i / RATE, pcm[i : i + BLOCK].tobytes())
    return out


@pytest.mark.parametrize("voice", ["piper:joe", "flite:slt"])
def test_gate_streams_only_around_the_wake_word(voice: str) -> None:
    other, command = speech(OTHER, voice), speech(COMMAND, voice)
    pcm = concat(other, 2.0, command, 10.0, other)
    wake_start = T0 + (len(other) + 2 * RATE) / RATE
    after_start = wake_start + len(command) / RATE + 10.0
    gate = WakeGate(preroll_ms=1500, hold_s=6.0)
    out = run_gate(gate, pcm)
    assert gate.detections, "the local wake word did not fire"
    first_hit, last_hit = gate.detections[0].time, gate.detections[-1].time
    assert wake_start < first_hit < wake_start + len(command) / RATE
    times = np.array([t for t, _ in out])
    # pre-roll: the stream starts at most 1.5 s before the detection, and early enough to hold "hey"
    assert first_hit - 1.5 - 0.08 <= times[0] <= wake_start
    assert times[-1] <= last_hit + 6.0 + 1e-6 and times[-1] > last_hit + 6.0 - 0.16
    np.testing.assert_allclose(np.diff(times), BLOCK / RATE, atol=1e-6)  # one contiguous segment
    assert not np.any(times >= after_start)  # the later conversation stays on the Pi
    assert gate.passed == len(out) and gate.blocked == len(pcm) // BLOCK + 1 - len(out)
    # what streamed is what a hub needs: its own detector fires on it
    hub = WakeWordModel(["hey_jarvis"])
    streamed = np.frombuffer(b"".join(b for _, b in out), "<i2")
    scores = [hub.score(streamed[i : i + BLOCK])["hey_jarvis"] for i in range(0, len(streamed) - BLOCK + 1, BLOCK)]
    assert max(scores) > 0.5


def test_gate_stays_closed_on_other_speech_and_noise() -> None:
    talk = [speech(s, v) for s, v in ((OTHER, "piper:joe"), ("Could you pass me the salt please?", "flite:rms"))]
    talk.append(speech("I will be home around seven tonight.", "flite:awb"))
    room = noise(3.0, dbfs=-35.0, color="pink")
    pcm = concat(*talk, mix(concat(*talk), noise(1.0, dbfs=-30.0, color="pink")), room)
    gate = WakeGate()
    assert run_gate(gate, pcm) == []
    assert gate.detections == [] and gate.passed == 0 and not gate.is_open


def test_gate_opens_again_for_a_second_command() -> None:
    command = speech(COMMAND, "flite:slt")
    pcm = concat(1.0, command, 6.0, command, 6.0)
    gate = WakeGate(preroll_ms=1500, hold_s=2.0)
    out = run_gate(gate, pcm)
    times = np.array([t for t, _ in out])
    breaks = np.flatnonzero(np.diff(times) > 0.1)
    assert len(breaks) == 1, "expected two separate streamed segments"
    second_wake = T0 + 1.0 + len(command) / RATE + 6.0
    assert times[breaks[0] + 1] <= second_wake  # the second pre-roll reaches back before "hey jarvis"


def test_gate_cost_per_frame_and_bad_settings() -> None:
    gate = WakeGate()
    pcm = concat(speech(OTHER, "flite:slt"), 1.0)
    t0 = time.perf_counter()
    run_gate(gate, pcm)
    ms = (time.perf_counter() - t0) * 1000 / (len(pcm) / BLOCK)
    print(f"wake gate: {ms:.2f} ms per 80 ms frame (busy shared machine)")
    assert ms < 40  # well inside real time even on a loaded 2-core machine
    with pytest.raises(ValueError, match="threshold must be between 0 and 1"):
        WakeGate(threshold=1.5, model=object())
    with pytest.raises(ValueError, match="needs 16 kHz"):
        WakeGate(rate=8000, model=object())
