"""The rig that runs linux-voice-assistant beside sensorium's room devices (``benchmarks/peers/lva.py``) measures
what it reports, on a real PulseAudio: what is played into the peer's microphone sink is heard on its microphone
source in real time, the end of speech it returns is the utterance's end, and the first audible block on the
peer's loudspeaker is found when it plays. (linux-voice-assistant itself is not on PyPI; the benchmark runs it from
a checkout, which CI does not have.)"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from pulse import ensure_pulseaudio

from benchmarks.peers.lva import RATE, Lva, missing_reason

pytestmark = pytest.mark.slow


def _tone(lead: float, seconds: float, tail: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    tone = (6000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    return np.concatenate([np.zeros(int(lead * RATE), "<i2"), tone, np.zeros(int(tail * RATE), "<i2")])


async def test_the_rig_times_the_end_of_speech_and_the_first_audible_answer(tmp_path: Path) -> None:
    ensure_pulseaudio()
    lva = Lva(tmp_path, None, tmp_path / "lva", port=0)
    await asyncio.to_thread(lva.open_audio)
    try:
        pcm = _tone(0.5, 1.0, 0.3)
        t0 = time.monotonic()
        end = await lva.say(pcm)
        # as Mic.say counts it: the utterance's last sample + 0.1 s, the utterance starting when it is played
        assert 0.0 <= end - (t0 + len(pcm) / RATE + 0.1) < 0.3, end - t0

        assert lva.out is not None
        t1 = time.monotonic()
        answer = _tone(0.4, 0.5, 0.0).tobytes()
        play = ["pacat", "--raw", "--format=s16le", f"--rate={RATE}", "--channels=1", "-d", lva.sink_out]
        await asyncio.to_thread(subprocess.run, play, input=answer, check=True, timeout=20)
        first = lva.out.first_loud_after(t1)
        assert first is not None and 0.4 <= first - t1 < 0.7, first and first - t1
        await asyncio.sleep(0.8)
        assert lva.out.quiet_since(0.6)
    finally:
        await asyncio.to_thread(lva.close)


def test_a_folder_that_is_not_a_checkout_is_named(tmp_path: Path) -> None:
    assert missing_reason(None, None) == "no --lva checkout given"
    assert missing_reason(tmp_path, None) == f"{tmp_path} is not a linux-voice-assistant checkout"
    (tmp_path / "linux_voice_assistant").mkdir()
    (tmp_path / "linux_voice_assistant" / "__main__.py").write_text("")
    assert missing_reason(tmp_path, None) == (
        f"{tmp_path}/.venv/bin/python is absent: make the checkout's venv (its script/setup) or give --lva-python"
    )
