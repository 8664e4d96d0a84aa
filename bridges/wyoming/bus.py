"""The gateway's side of the hub: publish, route bus messages to the requests waiting for them, stage liveness.

The gateway is a hub client like the reasoning loop: one ``NodeLink`` (registration, heartbeat, the
hub's clock), one publisher and one subscriber on the data bus. It listens on the raw bus, not on the
hub's event stream, because a Wyoming client waits for each answer: the bus delivers an event as soon
as its stage publishes it, the event stream only after the hub has logged it.

Which stages are up comes from the ``stats`` every worker publishes once a second per stage: a
request for a stage nobody has reported for ``DOWN_AFTER`` seconds gets an error at once instead of
waiting out its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TypeVar, cast

from sensorium.pipeline.bus import Endpoints, Publisher, Subscriber
from sensorium.pipeline.clock import Clock
from sensorium.pipeline.messages import Message, StageStats
from sensorium.pipeline.node import NodeLink
from sensorium.pipeline.security import CurveKeys

log = logging.getLogger("sensorium.wyoming")

DOWN_AFTER = 3.5
"""A stage with no ``stats`` for this long is down (workers report every second)."""

Listener = Callable[[Message], None]
M = TypeVar("M", bound=Message)


class Bus:
    """Publish on the bus and hand received messages to listeners by topic kind."""

    def __init__(
        self,
        endpoints: Endpoints,
        name: str,
        prefixes: Iterable[str],
        *,
        clock: Clock | None = None,
        curve: CurveKeys | None = None,
        heartbeat: float = 0.5,
    ) -> None:
        self.endpoints = endpoints
        self.name = name
        self.clock = clock or Clock()
        self.curve = curve
        self.prefixes = sorted(set(prefixes) | {"stats/"})
        self.link = NodeLink(name, "client", endpoints, clock=self.clock, curve=curve, heartbeat=heartbeat)
        self._publisher: Publisher | None = None
        self._subscriber: Subscriber | None = None
        self._task: asyncio.Task[None] | None = None
        self._listeners: defaultdict[type[Message], list[Listener]] = defaultdict(list)
        self._seen: dict[str, float] = {}
        self._started = 0.0
        self.down_after = DOWN_AFTER
        """A stage with no ``stats`` for this long is down."""
        self.received = 0
        """Messages received from the bus."""

    async def start(self) -> None:
        """Connect to the hub (serving starts even while it is away: ZeroMQ reconnects)."""
        self._started = time.monotonic()
        await self.link.start()
        self._publisher = Publisher(self.endpoints, curve=self.curve)
        self._subscriber = Subscriber(self.endpoints, self.prefixes, curve=self.curve)
        self._task = asyncio.create_task(self._dispatch(), name=f"{self.name}-bus")
        if not await self.link.wait_connected(2.0) or not await self._publisher.wait_ready(2.0):
            log.warning("%s: hub at %s is not answering yet; serving anyway", self.name, self.endpoints.control)

    async def close(self) -> None:
        """Disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.link.close()
        for sock in (self._publisher, self._subscriber):
            if sock is not None:
                sock.close()

    async def publish(self, msg: Message) -> None:
        """Send ``msg`` from this gateway (stamped now on the hub clock unless it carries a time)."""
        assert self._publisher is not None, "start() first"
        if not msg.source:
            msg.source = self.name
        if not msg.time:
            msg.time = self.clock.now()
        await self._publisher.publish(msg)

    def listen(self, cls: type[M], fn: Callable[[M], None]) -> Callable[[], None]:
        """Call ``fn`` (synchronously, on the event loop) for each message of class ``cls`` received.

        The subscription prefixes given at construction decide what arrives at all. Returns the function
        that removes the listener.
        """
        listener = cast(Listener, fn)
        self._listeners[cls].append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners[cls].remove(listener)

        return remove

    async def _dispatch(self) -> None:
        assert self._subscriber is not None
        while True:
            msg = await self._subscriber.recv()
            self.received += 1
            if isinstance(msg, StageStats):
                self._seen[msg.stage] = time.monotonic()
            for fn in list(self._listeners.get(type(msg), ())):
                try:
                    fn(msg)
                except Exception:  # one broken request must not stop the others' messages
                    log.exception("%s: listener failed on %s", self.name, msg.topic())

    def stage_up(self, stage: str) -> bool:
        """True if a worker reported ``stage`` recently."""
        seen = self._seen.get(stage)
        return seen is not None and time.monotonic() - seen < self.down_after

    async def stage_down(self, stage: str) -> str | None:
        """Why ``stage`` cannot answer now (no worker reports it), or None when it is up.

        Right after start the gateway has not heard every worker yet: it waits up to ``down_after``
        from its own start before it calls a stage down.
        """
        while True:
            seen = self._seen.get(stage)
            now = time.monotonic()
            if seen is not None and now - seen < self.down_after:
                return None
            if now - self._started >= self.down_after:
                break
            await asyncio.sleep(0.1)
        if seen is None:
            return f"the {stage} stage is not running: no worker on the hub at {self.endpoints.subscribe} reports it"
        return f"the {stage} stage is down: its worker has not reported for {time.monotonic() - seen:.0f} s"
