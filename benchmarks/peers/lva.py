"""linux-voice-assistant, the ESPHome native-API satellite that Home Assistant's voice project points to, run beside
sensorium's room devices on the same audio (``python -m benchmarks.esphome --lva CHECKOUT``).

It is not on PyPI: give a checkout (``git clone https://github.com/OHF-Voice/linux-voice-assistant``) and a Python
that has it installed (default ``CHECKOUT/.venv/bin/python``; its ``script/setup`` makes that venv; it needs libmpv2
and PulseAudio). It runs from the checkout, as its own ``script/run`` does (its wake words and sounds lie there).

Its microphone is a PulseAudio null sink whose monitor is remapped as a source (what is played into the sink is what
it hears, in real time); its loudspeaker is another null sink, recorded in 10 ms blocks, so "first answer audio"
is the first audible block mpv played, after fetching the answer from Home Assistant. Its wake-up chime is a silent
file, and it streams while the chime plays (``--listen-during-wake-sound``): after the end of speech, anything
audible is the answer.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
import uuid
import wave
from pathlib import Path

import numpy as np

RATE = 16000
BLOCK = 160
"""10 ms at 16 kHz: the resolution of the recordings."""
LOUD = 500.0
"""RMS (int16) above which a block is sound, not silence."""


def missing_reason(checkout: Path | None, python: Path | None) -> str | None:
    """Why linux-voice-assistant cannot run here (None when it can)."""
    if checkout is None:
        return "no --lva checkout given"
    if not (checkout / "linux_voice_assistant" / "__main__.py").exists():
        return f"{checkout} is not a linux-voice-assistant checkout"
    py = python or checkout / ".venv" / "bin" / "python"
    if not py.exists():
        return f"{py} is absent: make the checkout's venv (its script/setup) or give --lva-python"
    for tool in ("pulseaudio", "pactl", "parec", "pacat"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install pulseaudio pulseaudio-utils)"
    found = subprocess.run([str(py), "-c", "import mpv, soundcard"], capture_output=True, text=True, cwd=checkout)
    if found.returncode != 0 and "soundcard" not in found.stderr:  # soundcard needs a running PulseAudio
        return f"{py} cannot import mpv (apt-get install libmpv2): {found.stderr.strip().splitlines()[-1]}"
    return None


def _pactl(*args: str) -> str:
    res = subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=20)
    if res.returncode != 0:
        raise RuntimeError(f"pactl {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout.strip()


def ensure_pulseaudio() -> None:
    """A per-user PulseAudio daemon (started when none runs)."""
    if subprocess.run(["pactl", "info"], capture_output=True).returncode == 0:
        return
    subprocess.run(["pulseaudio", "--daemonize", "--exit-idle-time=-1", "--system=false"], capture_output=True)
    for _ in range(50):
        if subprocess.run(["pactl", "info"], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("PulseAudio did not start")


def rms_blocks(pcm: np.ndarray) -> np.ndarray:
    """RMS of each whole 10 ms block of int16 ``pcm``."""
    n = len(pcm) // BLOCK
    x = pcm[: n * BLOCK].astype(np.float64).reshape(n, BLOCK)
    return np.sqrt((x * x).mean(axis=1))


class Recorder:
    """A PulseAudio source recorded in 10 ms blocks, each stamped with the monotonic time it arrived."""

    def __init__(self, source: str) -> None:
        self.times: list[float] = []
        self.rms: list[float] = []
        self._proc = subprocess.Popen(
            ["parec", "--raw", "--format=s16le", f"--rate={RATE}", "--channels=1", "--latency-msec=10", "-d", source],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        while data := self._proc.stdout.read(BLOCK * 2):
            t = time.monotonic()
            if len(data) == BLOCK * 2:
                self.rms.append(float(rms_blocks(np.frombuffer(data, "<i2"))[0]))
                self.times.append(t)

    def live(self) -> bool:
        """Blocks arrive in real time (the last one under 50 ms ago, after at least 0.3 s of them)."""
        times = self.times[-31:]
        return len(times) > 30 and time.monotonic() - times[-1] < 0.05 and times[-1] - times[0] < 0.4

    def first_loud_after(self, t0: float) -> float | None:
        """When the first audible block after ``t0`` arrived."""
        for t, r in zip(self.times[:], self.rms[:], strict=False):
            if t > t0 and r > LOUD:
                return t
        return None

    def quiet_since(self, seconds: float) -> bool:
        """Nothing audible in the last ``seconds``."""
        now = time.monotonic()
        recent = [r for t, r in zip(self.times[:], self.rms[:], strict=False) if t > now - seconds]
        return bool(recent) and max(recent) <= LOUD

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(5)


class Lva:
    """One linux-voice-assistant process with a microphone and a loudspeaker of its own (PulseAudio null sinks)."""

    def __init__(self, checkout: Path, python: Path | None, folder: Path, port: int) -> None:
        self.checkout, self.folder, self.port = checkout, folder, port
        self.python = python or checkout / ".venv" / "bin" / "python"
        tag = uuid.uuid4().hex[:6]
        self.sink_in, self.mic, self.sink_out = f"lva_in_{tag}", f"lva_mic_{tag}", f"lva_out_{tag}"
        self.log: list[tuple[float, str]] = []
        """Each line it logged, stamped with the monotonic time it was read."""
        self._modules: list[str] = []
        self._proc: subprocess.Popen[str] | None = None
        self.heard: Recorder | None = None
        self.out: Recorder | None = None

    async def start(self, timeout: float = 60.0) -> None:
        """Its sinks, the process, the recorders; returns once it serves the native API."""
        await asyncio.to_thread(self._launch)
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while not any("Server started" in line for _, line in self.log):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(line for _, line in self.log[-15:])
                raise RuntimeError(f"linux-voice-assistant did not start:\n{tail}")
            await asyncio.sleep(0.1)

    def open_audio(self) -> None:
        """Its microphone (a sink to play into, its monitor remapped as a source) and loudspeaker, both recorded."""
        ensure_pulseaudio()
        self._modules.append(_pactl("load-module", "module-null-sink", f"sink_name={self.sink_in}", f"rate={RATE}",
                                    "channels=1"))  # fmt: skip
        self._modules.append(_pactl("load-module", "module-remap-source", f"master={self.sink_in}.monitor",
                                    f"source_name={self.mic}"))  # fmt: skip
        self._modules.append(_pactl("load-module", "module-null-sink", f"sink_name={self.sink_out}", "rate=48000",
                                    "channels=2"))  # fmt: skip
        self.heard, self.out = Recorder(self.mic), Recorder(f"{self.sink_out}.monitor")
        # parec takes a moment (seconds on a busy machine) before its blocks flow in real time; a block that came
        # in a burst would be stamped late
        deadline = time.monotonic() + 20
        while not (self.heard.live() and self.out.live()):
            if time.monotonic() > deadline:
                raise RuntimeError("PulseAudio's recordings of the microphone and loudspeaker did not start")
            time.sleep(0.05)

    def _launch(self) -> None:
        self.open_audio()
        self.folder.mkdir(parents=True, exist_ok=True)
        chime = self.folder / "silence.wav"
        with wave.open(str(chime), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(bytes(2 * RATE // 5))  # 0.2 s
        cmd = [
            str(self.python), "-m", "linux_voice_assistant", "--name", "lva-bench", "--host", "127.0.0.1",
            "--port", str(self.port), "--audio-input-device", self.mic,
            "--audio-output-device", f"pulse/{self.sink_out}",
            # the same openWakeWord model as sensorium's wake stage (its microWakeWord hey_jarvis missed this
            # synthesized voice)
            "--wake-word-dir", str(self.checkout / "wakewords" / "openWakeWord"), "--wake-model", "hey_jarvis_v0.1",
            "--listen-during-wake-sound", "--wakeup-sound", str(chime),
            "--preferences-file", str(self.folder / "preferences.json"), "--download-dir", str(self.folder / "dl"),
            "--disable-peripheral-api", "--debug",
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            cmd, cwd=self.checkout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        threading.Thread(target=self._read_log, daemon=True).start()

    def _read_log(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self.log.append((time.monotonic(), line.rstrip()))

    def logged_after(self, t0: float, text: str) -> float | None:
        """When the first line containing ``text`` after ``t0`` was logged."""
        return next((t for t, line in self.log[:] if t > t0 and text in line), None)

    async def say(self, pcm: np.ndarray) -> float:
        """Play int16 ``pcm`` into its microphone in real time; returns the end of speech as ``Mic.say`` counts it
        (the utterance's last sample, + 0.1 s), from when the microphone heard its first audible block."""
        assert self.heard is not None
        t0 = time.monotonic()
        play = await asyncio.create_subprocess_exec(
            "pacat", "--raw", "--format=s16le", f"--rate={RATE}", "--channels=1", "--latency-msec=20",
            "-d", self.sink_in, stdin=subprocess.PIPE,
        )  # fmt: skip
        assert play.stdin is not None
        play.stdin.write(pcm.astype("<i2").tobytes())
        play.stdin.close()
        lead = int(np.argmax(rms_blocks(pcm) > LOUD)) * BLOCK / RATE
        heard = None
        async with asyncio.timeout(len(pcm) / RATE + 5):
            while heard is None:
                await asyncio.sleep(0.05)
                heard = self.heard.first_loud_after(t0)
        await play.wait()
        return heard - lead + len(pcm) / RATE + 0.1

    async def answered(self, end: float, timeout: float = 40.0) -> tuple[float | None, float | None]:
        """(when the answer was handed to its player, when its first audible block played), after waiting for the
        answer to finish playing; (None, None) when nothing played within ``timeout``."""
        assert self.out is not None
        deadline = time.monotonic() + timeout
        first = None
        while time.monotonic() < deadline:
            first = first or self.out.first_loud_after(end)
            if first is not None and time.monotonic() > first + 0.5 and self.out.quiet_since(0.6):
                break
            await asyncio.sleep(0.05)
        return self.logged_after(end - 1.0, "Playing TTS response"), first

    async def stop(self) -> None:
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """The process stopped, the recorders and the sinks removed."""
        for rec in (self.heard, self.out):
            if rec is not None:
                rec.close()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        for module in reversed(self._modules):
            subprocess.run(["pactl", "unload-module", module], capture_output=True)
