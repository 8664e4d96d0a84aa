"""The web console: who sensorium thinks is where, the timeline, unknown faces and voices to name.

Serves http://127.0.0.1:8780/ by default ([console] host, port). Any other address needs
[console] token_file (open the page once with ?token=… or send Authorization: Bearer …) or
ingress_from (Home Assistant's ingress proxy). The console is a hub client; naming an unknown
enrols them with this deployment's own speaker and face models into the gallery its workers read.
Crops and clips of unknowns are kept [console] retention (7 days), files mode 0600; --no-media
keeps embeddings only. docs/console.md has the pages and screenshots.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

HELP = "web console: rooms now, timeline, unknowns inbox, people, health"
LOADS_MODELS = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="deployment TOML ([console] is optional)")
    p.add_argument("--hub", help="hub base address (default: [hub] address of --config)")
    p.add_argument("--host", help="listen address (default: [console] host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default: [console] port, 8780)")
    p.add_argument("--state", help="folder for the console's database and media (default: <data_dir>/console)")
    p.add_argument("--no-media", action="store_true", help="keep no face crops or voice clips, only embeddings")


def run(args: argparse.Namespace) -> int:
    from sensorium.bridges.console.app import Access, make_app, serve
    from sensorium.bridges.console.service import Console
    from sensorium.bridges.console.store import Store
    from sensorium.deployment import load_deployment
    from sensorium.enrollment import ConsoleIdentity
    from sensorium.pipeline.client import Client
    from sensorium.pipeline.config import ConfigError, ConsoleConfig
    from sensorium.pipeline.security import KeyError_, node_keys

    try:
        dep = load_deployment(args.config)
        cfg = dep.console or ConsoleConfig()
        host = args.host or cfg.host
        port = args.port or cfg.port
        # the same rule as the file's, for --host
        ConsoleConfig(host=host, port=port, token_file=cfg.token_file, ingress_from=cfg.ingress_from)
        token = ""
        if cfg.token_file:
            try:
                token = Path(cfg.token_file).read_text().splitlines()[0].strip()
            except (OSError, IndexError) as exc:
                raise ConfigError(
                    f"[console] token_file {cfg.token_file}: cannot read a token from it ({exc})"
                ) from None
            if len(token) < 16:
                raise ConfigError(f"[console] token_file {cfg.token_file}: the token must be at least 16 characters")
        curve = node_keys(cfg.keys, "console") if cfg.keys else None
        retention = float(cfg.retention)
        face_every = float(cfg.face_every)
    except (ConfigError, KeyError_, ValueError) as exc:
        print(f"sensorium console: {exc}", file=sys.stderr)
        return 2
    store = Store(Path(args.state) if args.state else dep.data_dir / "console", media=cfg.media and not args.no_media)
    identity = ConsoleIdentity.for_deployment(dep)

    async def main() -> None:
        async with Client(args.hub or dep.hub.address, name="console", curve=curve) as client:
            console = Console(client, store, identity, clip_s=cfg.clip_s, face_every=face_every, retention=retention)
            app = make_app(console, Access(token=token, ingress_from=tuple(cfg.ingress_from)))
            task = asyncio.create_task(serve(console, app, host, port))
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, task.cancel)
            print(f"console: http://{host}:{port}/ (hub {args.hub or dep.hub.address})", flush=True)
            with contextlib.suppress(asyncio.CancelledError):
                await task

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"sensorium console: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0
