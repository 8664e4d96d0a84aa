"""Everything in one process: hub, workers and (optionally) edge agents over inproc/ipc.

This is what ``sensorium demo``, ``sensorium replay`` (without ``--hub``), the benchmarks and the
end-to-end tests run: the same Hub, Worker and EdgeAgent classes as a real deployment, sharing a
clock and a ZeroMQ context instead of machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from sensorium.deployment import placement_specs
from sensorium.pipeline.bus import Endpoints
from sensorium.pipeline.clock import Clock
from sensorium.pipeline.config import Deployment
from sensorium.pipeline.hub import Hub
from sensorium.pipeline.runtime import LadderPolicy
from sensorium.pipeline.worker import Worker
from sensorium.registry import stage_class

log = logging.getLogger("sensorium.embedded")


@dataclass
class Embedded:
    """A running in-process deployment."""

    deployment: Deployment
    endpoints: Endpoints
    address: str
    hub: Hub
    clock: Clock
    workers: list[Worker] = field(default_factory=list)

    def summary(self) -> list[dict[str, object]]:
        """Per-stage latency summaries of every worker."""
        return [row | {"worker": w.name} for w in self.workers for row in w.summary()]

    async def drain(self, timeout: float = 60.0) -> None:
        """Wait until every stage handled everything queued."""
        for w in self.workers:
            await w.drain(timeout)


@contextlib.asynccontextmanager
async def embedded(
    deployment: Deployment,
    *,
    address: str | None = None,
    workers: Iterable[str] | None = None,
    policy: LadderPolicy | None = None,
) -> AsyncIterator[Embedded]:
    """Start the hub and the named workers (default: all); stop them all on exit."""
    address = address or f"inproc://sensorium-{uuid.uuid4().hex[:8]}"
    clock = Clock()
    hub_cfg = deployment.hub
    hub = Hub(
        hub_cfg,
        clock=clock,
        bind=address,
        placement=placement_specs(deployment),
        nodes=[*deployment.edges, *deployment.workers],
    )
    await hub.start()
    env = Embedded(deployment, hub.endpoints, address, hub, clock)
    try:
        for name in workers if workers is not None else deployment.workers:
            wcfg = deployment.worker(name)
            classes = {s: stage_class(s) for s in wcfg.runs()}
            w = Worker(deployment, name, classes, endpoints=hub.endpoints, clock=clock, policy=policy)
            await w.start()
            env.workers.append(w)
        await asyncio.sleep(0.2)  # let subscriptions propagate through the proxy
        yield env
    finally:
        for w in env.workers:
            with contextlib.suppress(Exception):
                await w.stop()
        await hub.stop()
