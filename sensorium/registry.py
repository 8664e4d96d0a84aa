"""Stage names → their classes in ``nodes/``, imported only when a worker or config needs them.

This is the wiring's map; ``pipeline`` never imports ``nodes``. Node modules import their model
libraries lazily (inside ``start``), so importing a stage class is cheap even on a Raspberry Pi.
"""

from __future__ import annotations

import importlib

from pipeline.stage import Stage

STAGES: dict[str, str] = {
    "wake": "nodes.wake:WakeStage",
    "stt": "nodes.stt:SttStage",
    "speaker": "nodes.speaker:SpeakerStage",
    "detect": "nodes.detect:DetectStage",
    "face": "nodes.face:FaceStage",
    "presence": "nodes.presence:PresenceStage",
    "tts": "nodes.tts:TtsStage",
    "arbiter": "nodes.arbiter:ArbiterStage",
}


def stage_class(name: str) -> type[Stage]:
    """The class implementing stage ``name``; ``KeyError`` names the known stages."""
    try:
        module, cls = STAGES[name].split(":")
    except KeyError:
        raise KeyError(f"unknown stage {name!r} (known: {', '.join(sorted(STAGES))})") from None
    return getattr(importlib.import_module(module), cls)


def available() -> dict[str, type[Stage]]:
    """Every stage whose module imports here."""
    out: dict[str, type[Stage]] = {}
    for name in STAGES:
        try:
            out[name] = stage_class(name)
        except ImportError:
            continue
    return out
