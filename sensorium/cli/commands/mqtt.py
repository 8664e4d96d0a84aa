"""Bridge the hub to an MQTT broker: presence states with Home Assistant discovery, events, commands back.

Reads the deployment's [mqtt] table (broker, credentials, topics, site) and its [rooms]; the
enrolled people come from [mqtt] people, else from the gallery. Runs until SIGINT/SIGTERM, then
publishes "offline". Exit status 1 when the broker refuses the credentials or the password file
cannot be read (systemd restarts it), 2 for a bad deployment file. docs/home-assistant.md has the
topics, the entities Home Assistant gets and a sample automation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "bridge presence and events to MQTT with Home Assistant discovery; commands back"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="deployment TOML with an [mqtt] table")
    p.add_argument("--hub", help="hub base address (default: [hub] address of --config)")
    p.add_argument("--state", help="folder for the bridge's state file (default: the deployment's data_dir)")
    p.add_argument(
        "--remove",
        action="store_true",
        help="delete this site's discovery configs, states and availability from the broker, and the state file "
        "(Home Assistant drops the devices), then exit",
    )


def run(args: argparse.Namespace) -> int:
    from sensorium.bridges.mqtt.bridge import Bridge, BridgeError, run_bridge
    from sensorium.bridging import gallery_people
    from sensorium.deployment import load_deployment
    from sensorium.pipeline.config import ConfigError
    from sensorium.pipeline.security import KeyError_, node_keys

    try:
        dep = load_deployment(args.config)
        cfg = dep.mqtt
        if cfg is None:
            raise ConfigError(f"{args.config}: no [mqtt] table (the broker to bridge to); see docs/home-assistant.md")
        name = f"mqtt-{cfg.site}"
        curve = node_keys(cfg.keys, name) if cfg.keys else None
        people = (
            (lambda: list(cfg.people))
            if cfg.people
            else gallery_people(Path(cfg.gallery or dep.data_dir / "gallery.db"))
        )
        bridge = Bridge(
            cfg,
            list(dep.rooms),
            args.hub or dep.hub.address,
            data_dir=Path(args.state) if args.state else dep.data_dir,
            people=people,
            curve=curve,
            heartbeat=float(dep.hub.heartbeat),
            name=name,
        )
    except (ConfigError, KeyError_, BridgeError, ValueError) as exc:
        print(f"sensorium mqtt: {exc}", file=sys.stderr)
        return 2
    try:
        if args.remove:
            import asyncio

            import aiomqtt

            try:
                cleared = asyncio.run(bridge.remove())
            except aiomqtt.MqttError as exc:
                raise BridgeError(f"broker {cfg.host}:{cfg.port}: {exc}") from None
            print(f"mqtt: cleared {len(cleared)} retained topics of site {cfg.site!r} on {cfg.host}:{cfg.port}")
            return 0
        print(
            f"mqtt: bridging hub {args.hub or dep.hub.address} to {cfg.host}:{cfg.port} as {bridge.topics.root}",
            flush=True,
        )
        run_bridge(bridge)
    except BridgeError as exc:
        print(f"sensorium mqtt: {exc}", file=sys.stderr)
        return 1
    return 0
