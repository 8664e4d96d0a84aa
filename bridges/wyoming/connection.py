"""One Home Assistant connection to the gateway, whatever its port serves: the plumbing both kinds share.

A service port's connection (:mod:`bridges.wyoming.handlers`) and a room satellite's
(:mod:`bridges.wyoming.satellite`) both write events that may find the client gone, run tasks that
must not outlive the connection or fail silently, and answer a malformed event with an ``error`` event
instead of closing. The request streams (:mod:`bridges.wyoming.streams`) see a connection only through
this class.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from wyoming.error import Error
from wyoming.event import Event
from wyoming.server import AsyncEventHandler

from sensorium.bridges.tasks import Tasks
from sensorium.bridges.wyoming.gateway import Gateway

log = logging.getLogger("sensorium.wyoming")


class RequestFailed(Exception):
    """A request cannot go on; the text says why (sent as an ``error`` event)."""

    def __init__(self, text: str, code: str) -> None:
        super().__init__(text)
        self.code = code


class Connection(AsyncEventHandler):
    """A Wyoming connection served by the gateway ``gw``; ``label`` names it in log lines."""

    def __init__(self, gw: Gateway, label: str, reader: Any, writer: Any) -> None:
        super().__init__(reader, writer)
        self.gw = gw
        self.label = label
        self.closed = False
        """The client went away (or we closed): nothing more is written."""
        self.tasks = Tasks(self.failed)

    async def run(self) -> None:
        """Serve until the client goes; one that drops the connection (Home Assistant resets its probes) is a
        debug line, not a task exception nobody retrieves (the library's server never awaits this task)."""
        try:
            await super().run()
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.debug("%s: the client dropped the connection: %s", self.label, exc)

    async def write(self, event: Event) -> None:
        """Send ``event``; a client that went away is not an error of ours."""
        if self.closed:
            return
        try:
            await self.write_event(event)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("%s: client gone while writing %s: %s", self.label, event.type, exc)
            self.closed = True

    async def malformed(self, event: Event, exc: Exception) -> None:
        """Answer an event whose fields could not be read; the connection keeps serving."""
        await self.write(
            Error(text=f"malformed {event.type!r} event: {type(exc).__name__}: {exc}", code="bad-event").event()
        )

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run ``coro`` for this connection: cancelled when it goes away, its failure handled by ``failed``."""
        return self.tasks.spawn(coro)

    async def failed(self, exc: Exception) -> None:
        """A task of this connection raised ``exc`` (logged; a service answers the client and closes)."""
        log.error("%s: task failed", self.label, exc_info=exc)

    async def disconnect(self) -> None:
        """The client went away: cancel what runs for it."""
        self.closed = True
        self.tasks.cancel()
