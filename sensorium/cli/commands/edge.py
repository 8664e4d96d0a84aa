"""Run the edge agent of one node (a Raspberry Pi in a room): capture its microphone and cameras,
publish them to the hub, and play the room's answers on its speaker.

The node's settings come from its [edges.NAME] table: [edges.NAME.microphone] (device, block_ms,
local_wake, preroll_ms), [edges.NAME.cameras.CAM] (source = USB index, /dev/videoN, rtsp:// URL,
video file, image folder or "picamera2"; fps, width, jpeg_quality, motion_threshold) and
[edges.NAME.playback]. A missing microphone or camera is reported and retried, never fatal; while
the hub is unreachable the agent keeps up to --buffer seconds of audio and the newest frame per
camera, and sends them when the hub is back.

Examples:
  sensorium edge --config /etc/sensorium/deploy.toml --name kitchen-pi
  sensorium edge --config deploy.toml --name kitchen-pi --wav hey_jarvis.wav --once
  sensorium edge --config deploy.toml --name kitchen-pi --hub tcp://hub.local:7700

Needs only the 'edge' extra (no torch, no model libraries): pip install 'sensorium[edge]'.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import sys
from typing import Any

HELP = "capture a room's microphone and cameras and publish them to the hub (runs on the Pi)"


def _speed(text: str) -> float:
    if text.lower() in ("max", "inf"):
        return math.inf
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0 or 'max', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0 or 'max', got {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--config", required=True, metavar="TOML", help="deployment file")
    p.add_argument("--name", required=True, help="this node: an [edges.NAME] table of the config, e.g. kitchen-pi")
    p.add_argument("--wav", metavar="FILE", help="play this WAV file instead of the microphone (tests, demos)")
    p.add_argument(
        "--speed", type=_speed, default=1.0, metavar="X", help="play --wav X times real time ('max' = no pacing)"
    )
    p.add_argument("--loop", action="store_true", help="restart --wav and video-file cameras at their end")
    p.add_argument("--once", action="store_true", help="exit when --wav and file cameras ended and all was sent")
    p.add_argument("--hub", metavar="ADDRESS", help="hub base address, overriding [hub] address (tcp://HOST:PORT)")
    p.add_argument(
        "--buffer", type=float, default=30.0, metavar="SECONDS", help="audio held while the hub is away (default 30)"
    )
    p.add_argument(
        "--wake-model",
        action="append",
        metavar="NAME_OR_PATH",
        help="local wake gate model, overriding [edges.NAME.microphone] wake_models: a bundled name or an "
        ".onnx/.tflite file; repeatable",
    )
    p.add_argument(
        "--hold",
        type=float,
        metavar="SECONDS",
        help="local wake gate: seconds sent after the wake word (default: the microphone's hold_ms)",
    )
    p.add_argument("--stats", metavar="FILE", help="write counters and capture→publish overhead (JSON) at exit")


def load_edge_deployment(path: str) -> Any:
    """The deployment with every ``[stages.*]`` table accepted unchecked, so no stage module is imported."""
    import msgspec

    from sensorium.pipeline.config import load
    from sensorium.registry import STAGES

    class Unchecked(msgspec.Struct):
        pass

    return load(path, {name: Unchecked for name in STAGES})


def run(args: argparse.Namespace) -> int:
    from sensorium.edge.agent import EdgeAgent
    from sensorium.pipeline.config import ConfigError
    from sensorium.pipeline.security import KeyError_

    try:
        dep = load_edge_deployment(args.config)
        agent = EdgeAgent(
            dep,
            args.name,
            wav=args.wav,
            speed=args.speed,
            hub_address=args.hub,
            buffer_s=args.buffer,
            loop_files=args.loop,
            hold_s=args.hold,
            wake_models=tuple(args.wake_model) if args.wake_model else None,
        )
        _ = agent._curve  # load keys now: a missing key file is a clear error before anything starts
        if args.hub:
            from sensorium.pipeline.bus import Endpoints

            Endpoints.from_address(args.hub)
    except (ConfigError, KeyError_, ValueError) as exc:
        print(f"sensorium edge: {exc}", file=sys.stderr)
        return 2
    if args.wav:
        from sensorium.edge.audio import AudioSourceError, read_wav_mono

        try:
            read_wav_mono(args.wav)
        except AudioSourceError as exc:
            print(f"sensorium edge: {exc}", file=sys.stderr)
            return 2
    cfg = agent.config
    parts = []
    mic = cfg.microphone
    gate = " (local wake gate)" if mic and mic.local_wake else ""
    if args.wav or (mic and mic.file):
        parts.append(f"audio from {args.wav or mic.file}{gate}")  # type: ignore[union-attr]
    elif mic:
        parts.append(f"microphone {mic.device if mic.device is not None else 'default'}{gate}")
    parts += [f"camera {n} ({c.source})" for n, c in cfg.cameras.items()]
    if cfg.playback and dep.speaker_of(cfg.room) == args.name:
        parts.append("speaker")
    print(f"edge {args.name} in {cfg.room}: {', '.join(parts) or 'nothing to capture'} → {agent.address}", flush=True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, agent.stop)
        await agent.run(once=args.once)

    from sensorium.pipeline.node import NameInUse

    try:
        asyncio.run(main())
    except NameInUse as exc:
        print(f"sensorium edge: {exc}", file=sys.stderr)
        return 1
    finally:
        summary = agent.summary()
        if args.stats:
            with open(args.stats, "w") as f:
                json.dump(summary, f, indent=2)
        held = f", {summary['held']} unsent (hub unreachable)" if summary["held"] else ""
        print(f"edge {args.name}: sent {summary['sent']}{held}, dropped audio {summary['dropped_audio']}", flush=True)
    return 0
