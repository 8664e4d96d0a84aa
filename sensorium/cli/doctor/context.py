"""What every check is given: the deployment, the node checked, the options, and the one hub round trip."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from sensorium.cli.doctor.probes import _connectable
from sensorium.pipeline.config import Deployment, load


class _Unchecked(msgspec.Struct):
    """Options of a stage whose code does not import here (e.g. a model stage on an edge-only Pi)."""


def load_any(path: str | Path) -> Deployment:
    """Load the deployment, checking the options of every stage that imports on this machine.

    A Raspberry Pi with only the ``edge`` extra cannot import the model stages; their tables are then
    accepted unchecked instead of making the whole file invalid here.
    """
    from sensorium.deployment import stage_options
    from sensorium.registry import STAGES

    options, budgets = stage_options()
    for name in STAGES:
        options.setdefault(name, _Unchecked)
    return load(path, options, budgets)


@dataclass
class Checkup:
    """One node (or the whole one-box deployment) of ``deployment`` to check, and how."""

    deployment: Deployment
    """The validated deployment file."""
    node: str | None = None
    """Node to check: an edge, a worker, "hub", or None for everything (one box)."""
    hub_timeout: float = 3.0
    """Seconds to wait for the hub's answer."""
    load_models: bool = True
    """Load each placed stage's models (the real check, a few seconds per stage)."""
    audio_seconds: float = 0.3
    """How much audio to record from each microphone."""
    state_dir: Path | None = None
    """The hub's state folder (default ``<data_dir>/hub``, as ``sensorium hub``)."""
    probe: tuple[float, Any] | None = field(default=None, repr=False)
    """The hub's answer to one control round trip: (seconds, reply), or None (asked once, see ``probe_hub``)."""
    probed: bool = field(default=False, repr=False)

    def roles(self) -> tuple[bool, list[str], list[str]]:
        """(check the hub?, workers to check, edges to check) for ``node``."""
        dep = self.deployment
        if self.node is None:
            return True, list(dep.workers), list(dep.edges)
        if self.node == "hub":
            return True, [], []
        if self.node in dep.workers:
            return False, [self.node], []
        if self.node in dep.edges:
            return False, [], [self.node]
        known = ", ".join(["hub", *dep.workers, *dep.edges])
        raise ValueError(f"{dep.path}: no node named {self.node!r} (known: {known})")

    def curve(self) -> Any:
        """Keys this machine would use to reach the hub (a node's, or the hub's own), or None."""
        from sensorium.pipeline.security import CurveKeys, KeyError_, hub_keys, node_keys

        _, workers, edges = self.roles()
        for name in [*workers, *edges]:
            cfg = self.deployment.workers.get(name) or self.deployment.edges.get(name)
            if cfg is not None and cfg.keys:
                with contextlib.suppress(KeyError_, OSError):
                    return node_keys(cfg.keys, name)
        if self.deployment.hub.keys:
            with contextlib.suppress(KeyError_, OSError):
                k = hub_keys(self.deployment.hub.keys)
                return CurveKeys(public=k.public, secret=k.secret, server_public=k.public)
        return None

    def probe_hub(self) -> tuple[float, Any] | None:
        """One control round trip (an events query, which registers nothing): (rtt, reply) or None."""
        if not self.probed:
            self.probe = self.round_trip()
            self.probed = True
        return self.probe

    def round_trip(self) -> tuple[float, Any] | None:
        import zmq

        from sensorium.pipeline.bus import Endpoints
        from sensorium.pipeline.codec import CodecError, decode, encode
        from sensorium.pipeline.messages import EventsRequest

        endpoint = _connectable(Endpoints.from_address(self.deployment.hub.address).control)
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            curve = self.curve()
            if curve is not None:
                curve.apply_client(sock)
            sock.connect(endpoint)
            t0 = time.monotonic()
            sock.send_multipart(encode(EventsRequest(since=2**62)))
            if not sock.poll(int(self.hub_timeout * 1000)):
                return None
            frames = sock.recv_multipart()
            rtt = time.monotonic() - t0
            try:
                return rtt, decode(frames)
            except CodecError:
                return rtt, None
        finally:
            sock.close(0)
