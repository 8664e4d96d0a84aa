"""Serve Home Assistant's voice over the Wyoming protocol from this deployment's stages.

Reads the ``[wyoming]`` table of the deployment file: a wake word, a speech-to-text, a text-to-speech
and a conversation service on their ports, and one satellite per room listed in
``[wyoming.satellites]``. Loads no model: audio and text go over the bus to the stages the workers
run. Add the ports to Home Assistant's Wyoming integration (zeroconf announces them). See
docs/home-assistant.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

HELP = "serve Home Assistant's voice over Wyoming (wake, STT, TTS, conversation, satellites)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="deployment TOML with a [wyoming] table")


def offer_for(dep: Any) -> Any:
    """What the deployment's stages offer Home Assistant (wake words, STT model, voices, languages)."""
    from importlib.metadata import PackageNotFoundError, version

    from bridges.wyoming.offer import Offer
    from pipeline.config import ConfigError

    wake = dep.stages["wake"].options if "wake" in dep.stages else None
    stt = dep.stages["stt"].options if "stt" in dep.stages else None
    tts = dep.stages["tts"].options if "tts" in dep.stages else None
    words = list(wake.models) if wake is not None else ["hey_jarvis"]
    try:
        from models.wakeword import resolve

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
        from models.tts import TtsError, load_backend

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


def run(args: argparse.Namespace) -> int:
    from pipeline.config import ConfigError
    from pipeline.security import KeyError_, node_keys
    from sensorium.deployment import load_deployment

    try:
        from bridges.wyoming.gateway import Gateway
    except ImportError as exc:
        print(f"sensorium wyoming: {exc.name} is not installed: install the 'bridges' extra", file=sys.stderr)
        return 2
    try:
        dep = load_deployment(args.config)
        if dep.wyoming is None:
            raise ConfigError(f"{args.config}: no [wyoming] table (see docs/home-assistant.md)")
        cfg = dep.wyoming
        curve = node_keys(cfg.keys, cfg.name) if cfg.keys else None
        gateway = Gateway(dep, offer_for(dep), curve=curve)
    except (ConfigError, KeyError_) as exc:
        print(f"sensorium wyoming: {exc}", file=sys.stderr)
        return 2
    ports = ", ".join(f"{role} {port}" for role, port in cfg.ports().items())
    sats = ", ".join(f"{room} {port}" for room, port in cfg.satellites.items())
    print(f"wyoming {cfg.name} on {cfg.host}: {ports or 'no services'}; satellites: {sats or 'none'}", flush=True)

    async def main() -> int:
        try:
            await gateway.start()
        except OSError as exc:
            print(f"sensorium wyoming: {exc}", file=sys.stderr)
            return 2
        try:
            await asyncio.Event().wait()
        finally:
            await gateway.stop()
        return 0

    return asyncio.run(main())
