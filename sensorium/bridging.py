"""What the wiring hands the bridges from a deployment: the Wyoming offer its stages make, the enrolled people.

The bridges load no model and never import ``models`` or ``nodes``; the commands that start them (and the
benchmarks and tests that start them the same way) ask here, in the wiring, what the stages offer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("sensorium.bridging")


def offer_for(dep: Any) -> Any:
    """What the deployment's stages offer Home Assistant (wake words, STT model, voices, languages)."""
    from importlib.metadata import PackageNotFoundError, version

    from sensorium.bridges.wyoming.offer import Offer
    from sensorium.pipeline.config import ConfigError

    wake = dep.stages["wake"].options if "wake" in dep.stages else None
    stt = dep.stages["stt"].options if "stt" in dep.stages else None
    tts = dep.stages["tts"].options if "tts" in dep.stages else None
    words = list(wake.models) if wake is not None else ["hey_jarvis"]
    try:
        from sensorium.models.wakeword import resolve

        words = [resolve(m, wake.framework)[0] if wake is not None else m for m in words]
    except ImportError:
        pass  # no openWakeWord here: the names as configured (the wake stage reports the same for bundled ones)
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"{dep.path}: [stages.wake] models: {exc}") from None
    model = stt.model if stt is not None else "tiny.en"
    languages = ["en"] if model.endswith(".en") else [stt.language if stt is not None else "en"]
    spec = tts.backend if tts is not None else "piper"
    voices: dict[str, str | None] = {}
    try:
        from sensorium.models.tts import TtsError, load_backend

        voices[load_backend(spec).name] = None
        for extra in dep.wyoming.voices:
            try:
                load_backend(extra)
            except TtsError as exc:
                raise ConfigError(f"{dep.path}: [wyoming] voices: {exc}") from None
            voices[extra] = extra
    except ImportError:
        voices = {spec: None, **{v: v for v in dep.wyoming.voices}}
    try:
        ver = version("sensorium")
    except PackageNotFoundError:
        ver = "0"
    return Offer(wake_words=words, stt_model=model, languages=languages, voices=voices, version=ver)


def gallery_people(path: Path) -> Callable[[], list[str]]:
    """Reads the enrolled people from the gallery file each time it is called (none while it is missing)."""
    warned = False

    def read() -> list[str]:
        nonlocal warned
        if not path.exists():
            if not warned:
                log.warning("no gallery at %s yet: no person entities until people are enrolled", path)
                warned = True
            return []
        from sensorium.models.gallery import Gallery

        with Gallery(path) as g:
            return list(g.people())

    return read
