"""Edge audio: the streaming resampler, the WAV source (pacing, conversion, bad files) and the real
sounddevice microphone path recorded from a PulseAudio null sink's monitor."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pulse
import pytest

from sensorium.edge.audio import (
    AudioSourceError,
    MicrophoneSource,
    Resampler,
    WavFileSource,
    import_sounddevice,
    read_wav_mono,
    rescan_devices,
)
from sensorium.edge.retry import Backoff

try:  # tests/ is a plain folder on sys.path; works too if it becomes a package
    from media import read_wav, resample, speech, speech_wav, write_wav
except ImportError:
    from tests.media import read_wav, resample, speech, speech_wav, write_wav

REPO = Path(__file__).resolve().parents[1]
SENTENCE = "Hey Jarvis, turn on the kitchen lights."


def _tone(rate: int, freq: float, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (10000 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _best_correlation(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Peak normalized cross-correlation of b inside a, and the lag (samples) where it occurs."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    corr = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)[: len(a)]
    lag = int(np.argmax(corr))
    seg = a[lag : lag + len(b)]
    denom = np.sqrt(np.sum(seg**2) * np.sum(b[: len(seg)] ** 2)) + 1e-9
    return float(corr[lag] / denom), lag


# --------------------------------------------------------------------------------- resampler


@pytest.mark.parametrize("rate_in", [48000, 44100, 22050, 8000])
def test_resampler_in_pieces_equals_whole_and_keeps_a_tone(rate_in: int) -> None:
    x = _tone(rate_in, 1000.0, 2.0)
    whole = Resampler(rate_in, 16000).process(x)
    r = Resampler(rate_in, 16000)
    rng = np.random.default_rng(1)
    parts, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 4000))
        parts.append(r.process(x[i : i + n]))
        i += n
    pieces = np.concatenate(parts)
    assert abs(len(whole) - 32000) <= 1 and len(pieces) == len(whole)
    np.testing.assert_allclose(pieces, whole, atol=1e-2)
    y = whole[2000:18000]
    peak_hz = np.argmax(np.abs(np.fft.rfft(y * np.hanning(len(y))))) * 16000 / len(y)
    assert peak_hz == pytest.approx(1000.0, abs=2.0)
    assert np.sqrt(np.mean(y**2)) == pytest.approx(10000 / np.sqrt(2), rel=0.01)


def test_resampler_suppresses_aliasing() -> None:
    # 11 kHz cannot exist at 16 kHz; without a low-pass it would fold to 5 kHz at full level
    y = Resampler(48000, 16000).process(_tone(48000, 11000.0, 1.0))
    assert 20 * np.log10(np.sqrt(np.mean(y[500:] ** 2)) / (10000 / np.sqrt(2))) < -50


# --------------------------------------------------------------------------------- WAV source


async def _collect(source: WavFileSource) -> tuple[list[tuple[float, bytes]], list[float]]:
    blocks, arrivals = [], []
    async for t, pcm in source.blocks():
        arrivals.append(source.clock.now())
        blocks.append((t, pcm))
    return blocks, arrivals


async def test_wav_source_plays_in_real_time_with_hub_clock_times() -> None:
    path = speech_wav(SENTENCE, "flite:slt", lead=0.2, tail=0.2)
    original, rate = read_wav(path)
    duration = len(original) / rate
    src = WavFileSource(path, block_ms=80)
    t0 = time.monotonic()
    blocks, arrivals = await _collect(src)
    elapsed = time.monotonic() - t0
    assert rate == 16000
    assert np.array_equal(np.frombuffer(b"".join(b for _, b in blocks), "<i2"), original)
    assert all(len(b) == 2560 for _, b in blocks[:-1])
    assert elapsed == pytest.approx(duration, abs=0.3)
    times = np.array([t for t, _ in blocks])
    np.testing.assert_allclose(np.diff(times), 0.08, atol=1e-6)
    # each block is released once its last sample "was heard", not before
    ends = times + np.array([len(b) / 2 / 16000 for _, b in blocks])
    assert np.all(np.array(arrivals) >= ends - 0.005)
    assert np.median(np.array(arrivals) - ends) < 0.05


async def test_wav_source_speed_factor() -> None:
    path = speech_wav(SENTENCE, "flite:slt", lead=0.2, tail=0.2)
    duration = len(read_wav(path)[0]) / 16000
    t0 = time.monotonic()
    blocks, _ = await _collect(WavFileSource(path, speed=4.0))
    assert time.monotonic() - t0 == pytest.approx(duration / 4, abs=0.25)
    assert blocks[1][0] - blocks[0][0] == pytest.approx(0.08, abs=1e-6)  # the audio's own timeline
    t0 = time.monotonic()
    await _collect(WavFileSource(path, speed=float("inf")))
    assert time.monotonic() - t0 < 0.5
    with pytest.raises(ValueError, match="speed must be > 0"):
        WavFileSource(path, speed=0)


def test_wav_source_converts_rate_channels_and_sample_width(tmp_path: Path) -> None:
    voice = speech(SENTENCE, "flite:rms")
    stereo44 = resample(voice, 16000, 44100)
    path = tmp_path / "stereo44.wav"
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(np.stack([stereo44, stereo44], axis=1).astype("<i2").tobytes())
    got = read_wav_mono(path)
    assert abs(len(got) - len(voice)) <= 2
    corr, lag = _best_correlation(np.concatenate([got, np.zeros(100, np.int16)]), voice)
    assert corr > 0.98 and lag <= 2
    if shutil.which("ffmpeg"):  # 24-bit and 8-bit PCM written by a real encoder
        for codec in ("pcm_s24le", "pcm_u8", "pcm_s32le", "pcm_f32le"):
            out = tmp_path / f"{codec}.wav"
            src = write_wav(tmp_path / "src.wav", voice)
            subprocess.run(["ffmpeg", "-y", "-v", "error", "-i", str(src), "-c:a", codec, str(out)], check=True)
            assert _best_correlation(read_wav_mono(out), voice)[0] > 0.99, codec


def test_unreadable_audio_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioSourceError, match="not found"):
        read_wav_mono(tmp_path / "missing.wav")
    text = tmp_path / "notes.wav"
    text.write_text("these are not samples")
    with pytest.raises(
        AudioSourceError, match=r"not a readable WAV \(no RIFF/WAVE header\); convert it with: ffmpeg -i"
    ):
        read_wav_mono(text)
    with pytest.raises(AudioSourceError, match="is a directory"):
        read_wav_mono(tmp_path)
    if shutil.which("ffmpeg"):
        src = write_wav(tmp_path / "src.wav", speech(SENTENCE, "flite:slt"))
        mp3 = tmp_path / "speech.wav"  # an MP3 stream in a WAV container: a format we do not decode
        subprocess.run(["ffmpeg", "-y", "-v", "error", "-i", str(src), "-c:a", "libmp3lame", str(mp3)], check=True)
        with pytest.raises(AudioSourceError) as info:
            read_wav_mono(mp3)
        assert "\n" not in str(info.value) and "unsupported encoding (format 85" in str(info.value)
        assert "pcm_s16le" in str(info.value)


async def test_wav_source_error_surfaces_from_blocks(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AudioSourceError, match=r"bad\.wav"):
        await _collect(WavFileSource(bad))


# --------------------------------------------------------------------------------- microphone


def test_missing_portaudio_is_a_clear_error() -> None:
    # sounddevice raises OSError at import when ctypes cannot find libportaudio; make it not find it
    code = (
        "import ctypes.util\n"
        "ctypes.util.find_library = lambda name: None\n"
        "from sensorium.edge.audio import AudioSourceError, import_sounddevice\n"
        "try:\n    import_sounddevice()\nexcept AudioSourceError as e:\n    print('ERR', e)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ERR cannot load the PortAudio library")
    assert "sudo apt install libportaudio2" in res.stdout and "Traceback" not in res.stderr


async def test_missing_microphone_is_a_one_line_error_and_retried() -> None:
    statuses: list[tuple[str, str]] = []
    mic = MicrophoneSource(
        "no-such-microphone", on_status=lambda s, d: statuses.append((s, d)), backoff=Backoff(first=0.05, cap=0.2)
    )

    async def consume() -> None:
        async for _ in mic.blocks():
            pass

    task = asyncio.create_task(consume())
    for _ in range(100):
        if len(statuses) >= 3:
            break
        await asyncio.sleep(0.05)
    mic.close()
    await asyncio.wait_for(task, 5)  # ends cleanly: no traceback escaped
    assert len(statuses) >= 3
    for state, detail in statuses:
        assert state == "error" and "\n" not in detail
        assert "microphone 'no-such-microphone': cannot open" in detail and "retrying in" in detail
    assert "inputs:" in statuses[0][1]
    delays = [float(d.rsplit("retrying in ", 1)[1].rstrip("s")) for _, d in statuses[:3]]
    assert delays == sorted(delays) and delays[0] < delays[-1]  # backoff grows


# The real PortAudio path: PortAudio's ALSA "pulse" device recording a PulseAudio null sink's monitor
# while paplay plays real speech into that sink.


@pytest.fixture(scope="module")
def null_sink() -> Iterator[str]:
    with pulse.null_sink("sensorium_edge", 16000) as name:
        yield name


async def _record_while_playing(mic: MicrophoneSource, wav: Path, sink: str) -> tuple[np.ndarray, list, float]:
    blocks: list[tuple[float, bytes]] = []
    started = 0.0
    player: asyncio.subprocess.Process | None = None
    duration = len(read_wav(wav)[0]) / 16000

    async def consume() -> None:
        nonlocal started, player
        async for t, pcm in mic.blocks():
            blocks.append((t, pcm))
            if len(blocks) == 6:  # the stream runs: play into the sink now
                started = mic.clock.now()
                player = await asyncio.create_subprocess_exec("paplay", f"--device={sink}", str(wav))
            if started and mic.clock.now() > started + duration + 1.0:
                mic.close()

    await asyncio.wait_for(consume(), duration + 20)
    assert player is not None and await asyncio.wait_for(player.wait(), 10) == 0
    return np.frombuffer(b"".join(b for _, b in blocks), "<i2"), blocks, started


@pytest.mark.slow
@pytest.mark.parametrize("device_rate", [None, 48000])
async def test_microphone_records_speech_from_pulseaudio(
    null_sink: str, monkeypatch: pytest.MonkeyPatch, device_rate: int | None
) -> None:
    monkeypatch.setenv("PULSE_SOURCE", f"{null_sink}.monitor")  # what PortAudio's "pulse" device records
    wav = speech_wav(SENTENCE, "flite:slt", lead=0.1, tail=0.1)
    voice = read_wav(wav)[0]
    statuses: list[tuple[str, str]] = []
    mic = MicrophoneSource(
        "pulse", block_ms=80, device_rate=device_rate, on_status=lambda s, d: statuses.append((s, d))
    )
    recorded, blocks, started = await _record_while_playing(mic, wav, null_sink)
    assert mic.opened_rate == (device_rate or 16000)
    assert statuses and statuses[0][0] == "up" and f"{mic.opened_rate} Hz" in statuses[0][1]
    assert all(len(b) == 2560 for _, b in blocks)
    times = np.array([t for t, _ in blocks])
    # block times advance by one block; the first ones may step a little shorter while the timeline
    # settles on the earliest callback arrival, and a device that stalls shows as a forward jump
    gaps = np.diff(times)
    assert np.all(gaps > 0.07), gaps.min()
    assert np.mean(np.abs(gaps - 0.08) < 1e-3) > 0.9
    corr, lag = _best_correlation(recorded, voice)
    assert corr > 0.9, f"recorded audio does not match what was played (corr {corr:.2f})"
    # the file's first sample is stamped when paplay started it, on the hub clock. The tolerance is the
    # null sink's: PulseAudio renders a virtual sink ahead in chunks, so its monitor runs up to ~0.1 s early
    onset = times[0] + lag / 16000
    assert started - 0.25 < onset < started + 1.0, onset - started
    assert os.environ["PULSE_SOURCE"].endswith(".monitor")


@pytest.mark.slow
async def test_microphone_that_disappears_is_reported_retried_and_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    pulse.ensure_pulseaudio()
    name = f"sensorium_gone_{uuid.uuid4().hex[:6]}"

    def load() -> str:
        res = pulse.pactl("load-module", "module-null-sink", f"sink_name={name}", "rate=16000", "channels=1")
        assert res.returncode == 0, f"PulseAudio not running or refused the sink: {res.stderr.strip()}"
        return res.stdout.strip()

    module = load()
    monkeypatch.setenv("PULSE_SOURCE", f"{name}.monitor")
    statuses: list[tuple[float, str, str]] = []
    mic = MicrophoneSource(
        "pulse",
        stall_s=1.0,
        backoff=Backoff(0.2, 0.5),
        on_status=lambda s, d: statuses.append((time.monotonic(), s, d)),
    )
    blocks: list[float] = []
    gone_at = back_at = 0.0

    async def consume() -> None:
        async for _block in mic.blocks():
            blocks.append(time.monotonic())

    task = asyncio.create_task(consume())
    opened_by = time.monotonic() + 15
    try:
        while len(blocks) < 10:
            assert not task.done() and time.monotonic() < opened_by, statuses
            await asyncio.sleep(0.05)
        gone_at = time.monotonic()
        pulse.unplug(module)  # the microphone is unplugged
        while not [d for t, s, d in statuses if s == "error" and t > gone_at and "cannot open" in d]:
            assert time.monotonic() - gone_at < 15, statuses
            await asyncio.sleep(0.05)
        module = load()  # plugged back in
        back_at = time.monotonic()
        while not [b for b in blocks if b > back_at]:
            assert time.monotonic() - back_at < 20, statuses
            await asyncio.sleep(0.05)
    finally:
        mic.close()
        try:
            await asyncio.wait_for(task, 10)
        finally:
            pulse.pactl("unload-module", module)  # always: a sink left behind would catch later streams
    errors = [d for t, s, d in statuses if s == "error"]
    assert any("no audio for 1.0s; reopening" in d for d in errors)  # noticed the silence of a lost device
    assert all("\n" not in d for d in errors)
    assert statuses[-1][1] == "up" and statuses[-1][0] > back_at  # recovered by itself


@pytest.mark.slow
async def test_microphone_plugged_in_after_start_is_found(tmp_path: Path) -> None:
    """PortAudio lists devices once; the retry loop makes it look again, so a late microphone is found.

    A private PulseAudio server stands in for the USB microphone: absent when the edge starts, then
    started (plugged in) while the edge retries.
    """
    pulse.ensure_pulseaudio()
    sd = import_sounddevice()
    socket_path = tmp_path / "native"
    saved = {k: os.environ.get(k) for k in ("PULSE_SERVER", "PULSE_SOURCE")}
    os.environ["PULSE_SERVER"] = f"unix:{socket_path}"
    os.environ["PULSE_SOURCE"] = "plug.monitor"
    statuses: list[tuple[str, str]] = []
    mic = MicrophoneSource("pulse", backoff=Backoff(0.2, 0.5), on_status=lambda s, d: statuses.append((s, d)))
    server: asyncio.subprocess.Process | None = None
    blocks = 0

    async def consume() -> None:
        nonlocal blocks
        async for _ in mic.blocks():
            blocks += 1

    try:
        assert rescan_devices(sd) and "pulse" not in [d["name"] for d in sd.query_devices()]
        task = asyncio.create_task(consume())
        while len([s for s, _ in statuses if s == "error"]) < 2:
            assert not task.done() and len(statuses) < 50, statuses
            await asyncio.sleep(0.05)
        assert "cannot open" in statuses[0][1]
        (tmp_path / "home").mkdir()
        server = await asyncio.create_subprocess_exec(
            "pulseaudio", "-n", "--daemonize=no", "--use-pid-file=no", "--system=false",
            "--exit-idle-time=-1", "-F", "/dev/null",
            f"--load=module-native-protocol-unix socket={socket_path} auth-anonymous=1",
            "--load=module-null-sink sink_name=plug rate=16000 channels=1",
            env=os.environ | {"HOME": str(tmp_path / "home"), "XDG_RUNTIME_DIR": str(tmp_path)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        plugged = time.monotonic()
        while blocks < 5:
            assert not task.done() and time.monotonic() - plugged < 20, statuses
            await asyncio.sleep(0.05)
        ups = [d for s, d in statuses if s == "up"]
        assert ups and "recording at 16000 Hz" in ups[-1]
        mic.close()
        await asyncio.wait_for(task, 10)
    finally:
        mic.close()
        if server is not None:
            server.terminate()
            await asyncio.wait_for(server.wait(), 10)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        rescan_devices(sd)  # later tests see the shared PulseAudio server again
