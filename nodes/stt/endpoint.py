"""When an utterance ends: the stt stage's endpoint rule as a pure function over the VAD's state.

The stage feeds every chunk after the wake word to Silero (``models.vad``) and asks ``endpoint`` what
to do with the utterance now. The answer depends only on the stage's ``Durations``, the VAD's speech and
trailing-silence seconds, how long ago the wake word was heard, and what the speculative decode at the
last pause found — so the rule is testable without a model, a stream or a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, Protocol

MIN_SPEECH_S = 0.15
"""Speech needed after the wake word before trailing silence can end the utterance."""
SPEC_PAUSE_S = 0.2
"""Silence after which the utterance so far is decoded speculatively (capped by the endpoints)."""

Reason = Literal["endpoint", "early-endpoint", "max-length", "no-speech"]
"""Why ``endpoint`` ended an utterance (the stage adds "gap", "stream-stopped" and "client-stopped")."""


class _Seconds(Protocol):
    def seconds(self, key: str) -> float: ...


@dataclass(frozen=True)
class Durations:
    """The stt stage's ``Duration`` options, in seconds, decoded once when the stage is made."""

    preroll: float
    trailing_silence: float
    early_endpoint: float
    decode_margin: float
    encoder_window: float
    max_length: float
    no_speech_timeout: float
    partial_interval: float
    speaker_wait: float
    stream_timeout: float

    @classmethod
    def of(cls, options: _Seconds) -> Durations:
        """Read every field from the stage's options (``StageOptions.seconds`` names a bad value's key)."""
        return cls(**{f.name: options.seconds(f.name) for f in fields(cls)})

    @property
    def spec_pause(self) -> float:
        """Silence after which the speech so far is decoded speculatively: before either endpoint can fire."""
        early = self.early_endpoint if self.early_endpoint > 0 else SPEC_PAUSE_S
        return min(SPEC_PAUSE_S, self.trailing_silence / 2, early)


@dataclass(frozen=True)
class Heard:
    """What the VAD has heard since the wake word, and how far the stream has come."""

    speech_s: float
    """Seconds of speech since the wake word."""
    silence_s: float
    """Seconds of silence since the last speech (the trailing silence)."""
    since_wake: float
    """Seconds of audio from the wake detection to the end of the stream."""


@dataclass(frozen=True)
class Step:
    """``endpoint``'s answer: end the utterance (``close`` says why), or decode at this pause, or go on."""

    close: Reason | None = None
    speculate: bool = False


GO_ON = Step()


def early_end(d: Durations, complete: bool, silence_s: float) -> bool:
    """A complete command (the pause decode's reading) ends after ``early_endpoint`` of silence (0 = never)."""
    return complete and 0 < d.early_endpoint <= silence_s


def endpoint(d: Durations, heard: Heard, spec_speech_s: float, spec_complete: bool) -> Step:
    """What the utterance does after the newest audio.

    ``spec_speech_s`` is the speech seconds at which the last speculative decode started (-1 before
    any) and ``spec_complete`` whether that decode read as a complete command. In order: trailing
    silence after enough speech ends it; a complete command whose pause has had no speech since ends
    after ``early_endpoint``; ``max_length`` from the wake word ends it; so does ``no_speech_timeout``
    without speech; otherwise a new pause (no decode started at this amount of speech yet) asks for a
    speculative decode.
    """
    spoke = heard.speech_s >= MIN_SPEECH_S
    if spoke and heard.silence_s >= d.trailing_silence:
        return Step(close="endpoint")
    if spoke and spec_speech_s == heard.speech_s and early_end(d, spec_complete, heard.silence_s):
        return Step(close="early-endpoint")
    if heard.since_wake >= d.max_length:
        return Step(close="max-length")
    if not spoke and heard.since_wake >= d.no_speech_timeout:
        return Step(close="no-speech")
    if spoke and heard.silence_s >= d.spec_pause and spec_speech_s != heard.speech_s:
        return Step(speculate=True)
    return GO_ON
