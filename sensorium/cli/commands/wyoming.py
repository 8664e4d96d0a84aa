"""Serve Home Assistant's voice over the Wyoming protocol from this deployment's stages.

Reads the ``[wyoming]`` table of the deployment file: a wake word, a speech-to-text, a text-to-speech
and a conversation service on their ports, and one satellite per room listed in
``[wyoming.satellites]``. Loads no model: audio and text go over the bus to the stages the workers
run. Add the ports to Home Assistant's Wyoming integration (zeroconf announces them). See
docs/home-assistant.md.
"""

from __future__ import annotations

import argparse

HELP = "serve Home Assistant's voice over Wyoming (wake, STT, TTS, conversation, satellites)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="deployment TOML with a [wyoming] table")


def run(args: argparse.Namespace) -> int:
    from sensorium.bridging import offer_for
    from sensorium.cli.commands.serving import deployment_with, fail, missing_extra, serve_forever
    from sensorium.pipeline.config import ConfigError
    from sensorium.pipeline.security import KeyError_, node_keys

    try:
        from sensorium.bridges.wyoming.server import Server
    except ImportError as exc:
        return missing_extra("wyoming", exc)
    try:
        dep = deployment_with(args.config, "wyoming")
        cfg = dep.wyoming
        assert cfg is not None
        curve = node_keys(cfg.keys, cfg.name) if cfg.keys else None
        gateway = Server(dep, offer_for(dep), curve=curve)
    except (ConfigError, KeyError_) as exc:
        return fail("wyoming", exc)
    ports = ", ".join(f"{role} {port}" for role, port in cfg.ports().items())
    sats = ", ".join(f"{room} {port}" for room, port in cfg.satellites.items())
    print(f"wyoming {cfg.name} on {cfg.host}: {ports or 'no services'}; satellites: {sats or 'none'}", flush=True)
    return serve_forever("wyoming", gateway)
