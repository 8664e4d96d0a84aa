"""The tasks a client connection runs (the Wyoming connections and the ESPHome device's share this)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


class Tasks:
    """Tasks kept until they finish, cancelled together when the connection goes; a failure goes to ``failed``."""

    def __init__(self, failed: Callable[[Exception], Awaitable[None]]) -> None:
        self.failed = failed
        self.running: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(self._guard(coro))
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        task.add_done_callback(lambda _: coro.close())  # cancelled before it ran: not "never awaited"
        return task

    async def _guard(self, coro: Any) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self.failed(exc)

    def cancel(self) -> None:
        for task in list(self.running):
            task.cancel()
