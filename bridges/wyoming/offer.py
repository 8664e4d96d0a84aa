"""What the gateway offers Home Assistant, as Wyoming ``info``: the deployment's wake words, STT model,
voices and agent, and one satellite per room.

Built once at start from the deployment (``sensorium wyoming`` fills it in), so ``describe`` is
answered at once, well inside Home Assistant's 1 s limit. Every program, model and voice carries a
name, an attribution, ``installed: true`` and its languages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    HandleModel,
    HandleProgram,
    Info,
    Satellite,
    TtsProgram,
    TtsVoice,
    WakeModel,
    WakeProgram,
)

SENSORIUM = Attribution(name="sensorium", url="https://github.com/sensorium/sensorium")
OPENWAKEWORD = Attribution(name="openWakeWord (David Scripka)", url="https://github.com/dscripka/openWakeWord")
WHISPER = Attribution(name="OpenAI Whisper, run by faster-whisper", url="https://github.com/SYSTRAN/faster-whisper")
PIPER = Attribution(name="Piper (Rhasspy)", url="https://github.com/rhasspy/piper")
FLITE = Attribution(name="Flite (Carnegie Mellon University)", url="http://cmuflite.org")
ESPEAK = Attribution(name="eSpeak NG", url="https://github.com/espeak-ng/espeak-ng")

ROLES = ("wake", "stt", "tts", "handle")


def phrase_of(name: str) -> str:
    """The spoken phrase of a wake word model name: "hey_jarvis_v0.1" → "hey jarvis"."""
    base = re.sub(r"_v\d+(\.\d+)*$", "", name)
    return " ".join(p for p in re.split(r"[_\-\s]+", base) if p)


def voice_attribution(spec: str) -> Attribution:
    """Who made a TTS voice, from its backend spec ("piper…", "flite…", "espeak…")."""
    kind = spec.split(":", 1)[0].lower()
    if kind == "flite":
        return FLITE
    if kind in ("espeak", "espeak-ng"):
        return ESPEAK
    return PIPER


@dataclass
class Offer:
    """The deployment's voice services as Home Assistant sees them."""

    wake_words: list[str] = field(default_factory=lambda: ["hey_jarvis"])
    """Wake word names the wake stage detects (its ``WakeDetected.word``)."""
    stt_model: str = "tiny.en"
    """The stt stage's whisper model."""
    languages: list[str] = field(default_factory=lambda: ["en"])
    """Languages the STT model, the voices and the agent speak."""
    voices: dict[str, str | None] = field(default_factory=lambda: {"piper:en_US-joe-medium": None})
    """Wyoming voice name → ``Say.voice`` for the tts stage (None: the stage's default voice); first is default."""
    version: str = "0.1.0"
    """sensorium's version."""

    def default_voice(self) -> str:
        """Name of the voice used when a request names none."""
        return next(iter(self.voices))

    def wake_program(self) -> WakeProgram:
        return WakeProgram(
            name="sensorium-wake",
            description="sensorium wake word (openWakeWord on the hub's wake stage)",
            attribution=SENSORIUM,
            installed=True,
            version=self.version,
            models=[
                WakeModel(
                    name=w,
                    phrase=phrase_of(w),
                    description=phrase_of(w),
                    attribution=OPENWAKEWORD,
                    installed=True,
                    version=None,
                    languages=list(self.languages),
                )
                for w in self.wake_words
            ],
        )

    def info(self, roles: Iterable[str]) -> Info:
        """``info`` for a port that serves ``roles`` (some of ``ROLES``)."""
        roles = set(roles)
        info = Info()
        if "wake" in roles:
            info.wake = [self.wake_program()]
        if "stt" in roles:
            info.asr = [
                AsrProgram(
                    name="sensorium-stt",
                    description=f"sensorium streaming speech-to-text ({self.stt_model}), with speaker identification",
                    attribution=SENSORIUM,
                    installed=True,
                    version=self.version,
                    models=[
                        AsrModel(
                            name=self.stt_model,
                            description=f"whisper {self.stt_model}",
                            attribution=WHISPER,
                            installed=True,
                            version=None,
                            languages=list(self.languages),
                        )
                    ],
                    supports_transcript_streaming=True,
                    requires_external_vad=False,  # our stage endpoints: the transcript may come before audio-stop
                    prefers_auto_gain_enabled=False,
                    prefers_noise_reduction_enabled=False,
                )
            ]
        if "tts" in roles:
            info.tts = [
                TtsProgram(
                    name="sensorium-tts",
                    description="sensorium text-to-speech (the hub's tts stage), sentence by sentence",
                    attribution=SENSORIUM,
                    installed=True,
                    version=self.version,
                    voices=[
                        TtsVoice(
                            name=name,
                            description=name.split(":", 1)[-1],
                            attribution=voice_attribution(name),
                            installed=True,
                            version=None,
                            languages=list(self.languages),
                        )
                        for name in self.voices
                    ],
                    supports_synthesize_streaming=True,
                )
            ]
        if "handle" in roles:
            info.handle = [
                HandleProgram(
                    name="sensorium-agent",
                    description="sensorium's reasoning loop: the agent attached to the hub answers, knowing who speaks",
                    attribution=SENSORIUM,
                    installed=True,
                    version=self.version,
                    models=[
                        HandleModel(
                            name="sensorium-agent",
                            description="the agent connected to the sensorium hub",
                            attribution=SENSORIUM,
                            installed=True,
                            version=None,
                            languages=list(self.languages),
                        )
                    ],
                    supports_handled_streaming=True,
                )
            ]
        return info

    def satellite_info(self, name: str, room: str) -> Info:
        """``info`` of the satellite of ``room``: Home Assistant puts it in that area."""
        return Info(
            wake=[self.wake_program()],
            satellite=Satellite(
                name=name,
                description=f"sensorium satellite for the {room.replace('_', ' ')}: its microphone and loudspeaker",
                attribution=SENSORIUM,
                installed=True,
                version=self.version,
                area=room,
                has_vad=True,  # our stt stage endpoints the command
                active_wake_words=list(self.wake_words),
                max_active_wake_words=len(self.wake_words),
                supports_trigger=False,
            ),
        )
