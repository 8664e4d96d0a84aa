"""A room that hears its own loudspeaker: microphone audio mixed from what the room plays and who speaks.

What the loudspeaker plays (``played``: sensorium's answers in its own Piper voice, music synthesized
here with numpy, a TV-like voice from another synthetic voice) reaches the microphone through a room
impulse response, at a chosen signal-to-echo ratio (SER: the level of a person's speech over the
level of the echo, both as the RMS of their active parts); scripted people (other voices) speak wake
words, commands and barge-ins on top, through their own impulse response, plus a little noise.

The impulse responses are generated here with scipy/numpy (a direct path, a few early reflections and
an exponentially decaying diffuse tail for a chosen RT60) rather than pyroomacoustics' image-source
model: that package installs here but is not in the project's lock, and adding it would only change how
the reverberant tail is shaped, not what the wake and own-voice checks see (a delayed, coloured,
reverberant copy of the reference). ``write_scene`` writes the microphone WAV, the loudspeaker WAV (the
edge's ``reference_file``) and the labels: an edge agent reads them like a real room.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sensorium.evaluation.media import speech, write_wav

RATE = 16000
SPEECH_DBFS = -26.0
"""Level of a person's speech at the microphone (RMS of its active part)."""

OWN_VOICE = "piper:joe"
"""The voice sensorium answers in (the TTS stage's default)."""
TV_VOICE = "flite:awb"
PEOPLE = ("flite:kal16", "flite:rms")
"""People in the room. flite's slt (and awb, the TV) reach only 0.1–0.35 on "hey jarvis" through this room's
reverberation even with nothing playing, so they would measure openWakeWord's reverberation robustness,
not the echo: the barge-in recall is measured on voices that wake in the quiet room."""

ANSWERS = (
    "The kitchen lights are on.",
    "It is twenty past seven. Your first meeting is at nine.",
    "Tomorrow will be cloudy with a high of fourteen degrees and light rain in the afternoon.",
    "I set a timer for ten minutes. Just say hey jarvis if you want to change it.",
    "The front door is locked and the garage is closed.",
    "Hey Jarvis is my name. You can ask me about the weather, timers and the lights.",
    "Your parcel arrives on Thursday between ten and two.",
    "I added milk, eggs and bread to the shopping list.",
)
"""Answers sensorium speaks; two of them say its own wake word (the hardest case for self-wakes)."""

TV_LINES = (
    "Good evening and welcome to the news at six. Our top story tonight.",
    "Hey Jarvis, said the detective, turning off the lights in the old house.",
    "Temperatures will drop sharply overnight, with frost expected in the valleys.",
    "And now a word from our sponsors. Hey Jarvis, order more coffee.",
    "The match ended two all after a dramatic finish in extra time.",
    "Scientists say the new telescope will change what we know about distant planets.",
)
"""A TV programme the room's speaker plays; two lines say the wake word."""


@dataclass
class Span:
    """Something heard in the scene, in seconds from its start."""

    kind: str
    """"answer", "music", "tv" (played by the loudspeaker) or "wake", "barge", "command" (a person)."""
    start: float
    end: float
    text: str = ""
    wake_end: float = 0.0
    """For a person's phrase: where "hey jarvis" ends."""


@dataclass
class Scene:
    mic: np.ndarray
    """What the microphone hears (int16, 16 kHz)."""
    played: np.ndarray
    """What the loudspeaker played, the edge's reference (int16, 16 kHz, sample-aligned with ``mic``)."""
    spans: list[Span] = field(default_factory=list)
    ser_db: float | None = None

    @property
    def seconds(self) -> float:
        return len(self.mic) / RATE

    def playing_at(self, t: float) -> Span | None:
        for s in self.spans:
            if s.kind in ("answer", "music", "tv") and s.start <= t <= s.end:
                return s
        return None


def room_impulse_response(
    rt60: float = 0.4, delay_ms: float = 4.0, seed: int = 0, drr_db: float = 3.0, length_s: float | None = None
) -> np.ndarray:
    """Direct path after ``delay_ms``, early reflections, a diffuse tail decaying 60 dB in ``rt60``; the direct
    path ``drr_db`` louder than everything after it (a talker a metre or two from the microphone)."""
    rng = np.random.default_rng(seed)
    n = int((length_s or rt60 * 1.2) * RATE)
    d = int(delay_ms * RATE / 1000)
    late = np.zeros(n)
    for _ in range(6):  # walls, table, ceiling: 2–25 ms later, weaker
        k = d + int(rng.uniform(0.002, 0.025) * RATE)
        if k < n:
            late[k] += rng.uniform(0.2, 0.6) * rng.choice([-1.0, 1.0])
    t = np.arange(n) / RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60) * 0.15
    tail[: d + int(0.005 * RATE)] = 0.0
    late += tail
    late *= np.sqrt(10 ** (-drr_db / 10) / np.sum(late**2))
    late[d] = 1.0
    return late / np.sqrt(np.sum(late**2))


def music(seconds: float, seed: int = 0) -> np.ndarray:
    """A little synthesized music: chords of harmonic tones with envelopes, a bass line and a hi-hat."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    out = np.zeros(n)
    beat = 60.0 / rng.uniform(80, 130)
    roots = [220.0 * 2 ** (k / 12) for k in (0, 5, 7, 3, 8, 10)]
    t_beat = np.arange(int(beat * RATE)) / RATE
    env = np.exp(-t_beat * 3.0)
    pos = 0
    i = 0
    root = roots[0]
    while pos < n:
        if i % 4 == 0:  # a new chord every bar
            root = roots[rng.integers(len(roots))]
        m = min(len(t_beat), n - pos)
        note = np.zeros(len(t_beat))
        for ratio in (1.0, 1.26, 1.5):  # a major triad
            for h, amp in ((1, 1.0), (2, 0.4), (3, 0.2)):
                note += amp * np.sin(2 * np.pi * root * ratio * h * t_beat + rng.uniform(0, 6.28))
        note += 1.5 * np.sin(2 * np.pi * root / 2 * t_beat)  # bass
        hat = rng.standard_normal(len(t_beat)) * np.exp(-t_beat * 60.0) * 0.8
        out[pos : pos + m] += (note * env + hat)[:m]
        pos += m
        i += 1
    return _to_int16(out / (np.max(np.abs(out)) + 1e-9) * 0.5)


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def _active_rms(x: np.ndarray) -> float:
    """RMS over the 20 ms frames within 30 dB of the loudest (speech pauses and silence left out)."""
    f = x[: len(x) // 320 * 320].astype(np.float64).reshape(-1, 320)
    if len(f) == 0:
        return 0.0
    e = np.mean(f**2, axis=1)
    keep = e >= e.max() * 1e-3
    return float(np.sqrt(np.mean(e[keep]))) if keep.any() else 0.0


def _scale_to(x: np.ndarray, dbfs: float) -> np.ndarray:
    rms = _active_rms(x)
    return x.astype(np.float64) * (32768 * 10 ** (dbfs / 20) / rms) if rms > 0 else x.astype(np.float64)


def playback_programme(seconds: float, cache: Path, seed: int = 0) -> tuple[np.ndarray, list[Span]]:
    """What a room's loudspeaker plays for ``seconds``: answers, music and TV in turns, short pauses between."""
    rng = random.Random(seed)
    answers = [(t, speech(t, OWN_VOICE, cache)) for t in ANSWERS]
    tv = [(t, speech(t, TV_VOICE, cache)) for t in TV_LINES]
    total = int(seconds * RATE)
    out = np.zeros(total, np.int16)
    spans: list[Span] = []
    pos = int(0.5 * RATE)
    turn = 0
    while pos < total:
        kind = ("answer", "music", "tv")[turn % 3] if turn % 4 else "answer"
        if kind == "answer":
            text, clip = answers[rng.randrange(len(answers))]
            clips = [clip]
        elif kind == "tv":
            picks = [tv[rng.randrange(len(tv))] for _ in range(rng.randint(2, 4))]
            text = " ".join(t for t, _ in picks)
            clips = [np.concatenate([c, np.zeros(int(0.4 * RATE), np.int16)]) for _, c in picks]
        else:
            text, clips = "", [music(rng.uniform(15, 30), seed=rng.randrange(1 << 30))]
        clip = np.concatenate(clips)
        m = min(len(clip), total - pos)
        out[pos : pos + m] = clip[:m]
        spans.append(Span(kind, pos / RATE, (pos + m) / RATE, text))
        pos += m + int(rng.uniform(1.0, 3.0) * RATE)
        turn += 1
    return out, spans


def mix(
    played: np.ndarray,
    people: list[tuple[float, np.ndarray]],
    ser_db: float,
    *,
    rt60: float = 0.4,
    noise_dbfs: float = -65.0,
    seed: int = 0,
) -> np.ndarray:
    """The microphone: ``played`` through the room at ``SPEECH_DBFS - ser_db``, people at ``SPEECH_DBFS``, noise."""
    n = len(played)
    from scipy.signal import fftconvolve

    echo_ir = room_impulse_response(rt60, delay_ms=4.0, seed=seed)
    echo = fftconvolve(played.astype(np.float64), echo_ir)[:n]
    # One gain for the whole programme (a volume knob), set on its spoken/musical parts.
    mic = _scale_to(echo, SPEECH_DBFS - ser_db) if np.any(played) else np.zeros(n)
    person_ir = room_impulse_response(rt60, delay_ms=6.0, seed=seed + 1)
    for start, pcm in people:
        wet = _scale_to(fftconvolve(pcm.astype(np.float64), person_ir)[: len(pcm) + int(0.2 * RATE)], SPEECH_DBFS)
        a = int(start * RATE)
        m = min(len(wet), n - a)
        if m > 0:
            mic[a : a + m] += wet[:m]
    rng = np.random.default_rng(seed + 2)
    mic += rng.standard_normal(n) * 32768 * 10 ** (noise_dbfs / 20)
    return np.clip(np.round(mic), -32768, 32767).astype(np.int16)


def person_phrase(cache: Path, voice: str, wake: str, rest: str) -> tuple[np.ndarray, float]:
    """``wake`` then ``rest`` in ``voice``, and where the wake phrase ends (seconds)."""
    a = speech(wake, voice, cache)
    b = speech(rest, voice, cache) if rest else np.zeros(0, np.int16)
    gap = np.zeros(int(0.15 * RATE), np.int16)
    return np.concatenate([a, gap, b]), len(a) / RATE


def playback_scene(seconds: float, ser_db: float, cache: Path, seed: int = 0) -> Scene:
    """Only the loudspeaker (and noise): every wake or transcript here is the room hearing itself."""
    played, spans = playback_programme(seconds, cache, seed)
    return Scene(mix(played, [], ser_db, seed=seed), played, spans, ser_db)


def barge_in_scene(
    seconds: float, ser_db: float, cache: Path, seed: int = 0, every_s: float = 12.0, silent: bool = False
) -> Scene:
    """Playback with people saying "hey jarvis, stop" over it every ``every_s`` or so, while something plays
    (``silent``: the same phrases at the same times in the same room with the loudspeaker off)."""
    played, spans = playback_programme(seconds, cache, seed)
    rng = random.Random(seed + 7)
    people: list[tuple[float, np.ndarray]] = []
    t = 3.0
    while t < seconds - 4.0:
        span = next((s for s in spans if s.start + 0.5 <= t and t + 2.5 <= s.end), None)
        if span is not None:
            voice = PEOPLE[len(people) % len(PEOPLE)]
            pcm, wake_end = person_phrase(cache, voice, "hey jarvis", "stop")
            people.append((t, pcm))
            spans.append(Span("barge", t, t + len(pcm) / RATE, "hey jarvis, stop", wake_end=t + wake_end))
            t += rng.uniform(every_s * 0.7, every_s * 1.3)
        else:
            t += 0.5
    if silent:
        played = np.zeros_like(played)
    return Scene(mix(played, people, ser_db, seed=seed), played, spans, ser_db)


def quiet_scene(cache: Path, count: int = 6, seed: int = 0) -> Scene:
    """Nothing plays: people say "hey jarvis" and a command, a few seconds apart (wake latency unchanged?)."""
    people: list[tuple[float, np.ndarray]] = []
    spans: list[Span] = []
    t = 1.0
    for i in range(count):
        voice = PEOPLE[i % len(PEOPLE)]
        pcm, wake_end = person_phrase(cache, voice, "hey jarvis", "what is the weather like tomorrow")
        people.append((t, pcm))
        spans.append(
            Span("command", t, t + len(pcm) / RATE, "what is the weather like tomorrow", wake_end=t + wake_end)
        )
        t += len(pcm) / RATE + 3.0
    played = np.zeros(int((t + 1.0) * RATE), np.int16)
    return Scene(mix(played, people, 0.0, seed=seed), played, spans, None)


def write_scene(scene: Scene, folder: Path, name: str = "room") -> dict[str, Path]:
    """``<name>.mic.wav`` (the edge's ``file``), ``<name>.played.wav`` (its ``reference_file``), ``<name>.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "mic": folder / f"{name}.mic.wav",
        "played": folder / f"{name}.played.wav",
        "labels": folder / f"{name}.json",
    }
    write_wav(paths["mic"], scene.mic)
    write_wav(paths["played"], scene.played)
    paths["labels"].write_text(
        json.dumps({"ser_db": scene.ser_db, "spans": [asdict(s) for s in scene.spans]}, indent=1)
    )
    return paths
