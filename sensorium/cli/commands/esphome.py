"""Serve every room as an ESPHome voice device for Home Assistant (the native API, Noise-encrypted).

Reads the ``[esphome]`` table of the deployment file: one device per room of ``[esphome.rooms]`` (or every
room with a microphone), each on its port, announced as ``_esphomelib._tcp``. Loads no model: our wake
word and arbiter decide, audio and answers go over the bus. Add each device in Home Assistant's ESPHome
integration with the key in ``key_file``. See docs/home-assistant.md.
"""

from __future__ import annotations

import argparse

HELP = "serve each room as an ESPHome voice device for Home Assistant (announce, start_conversation)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="deployment TOML with an [esphome] table")


def run(args: argparse.Namespace) -> int:
    from sensorium.cli.commands.serving import deployment_with, fail, missing_extra, serve_forever
    from sensorium.pipeline.config import ConfigError

    try:
        from sensorium.bridges.esphome.server import Server
    except ImportError as exc:
        return missing_extra("esphome", exc)
    try:
        dep = deployment_with(args.config, "esphome")
        assert dep.esphome is not None
        words = list(dep.stages["wake"].options.models) if "wake" in dep.stages else None
        server = Server(dep, wake_words=words)
    except ConfigError as exc:
        return fail("esphome", exc)
    devs = ", ".join(f"{d.room} {d.name}:{d.port}" for d in server.devices.values())
    enc = f"Noise key in {dep.esphome.key_file}" if server.psk else "no encryption"
    print(f"esphome {server.name} on {dep.esphome.host}: {devs or 'no devices'}; {enc}", flush=True)
    return serve_forever("esphome", server)
