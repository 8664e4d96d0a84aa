"""A real hub and a real ``sensorium console`` (its Starlette app under uvicorn) on a loop in a thread.

Tests drive it from outside like a user: over HTTP or with a real browser (``webdriver.Browser``);
``publish`` puts messages on the hub's bus as stages and edges would, ``restart_hub`` stops the hub
and starts a new one on the same address and state.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import numpy as np

from sensorium.bridges.console.app import Access, make_app, serve
from sensorium.bridges.console.service import Console, Identity
from sensorium.bridges.console.store import Store
from sensorium.evaluation.ports import free_port
from sensorium.models.gallery import Gallery
from sensorium.pipeline.bus import Endpoints, Publisher
from sensorium.pipeline.client import Client
from sensorium.pipeline.config import HubConfig
from sensorium.pipeline.hub import Hub
from sensorium.pipeline.messages import Message


class GalleryIdentity:
    """The console's identity over a real gallery, for tests that hand the console embeddings themselves."""

    face_threshold = 0.5
    voice_threshold = 0.78

    def __init__(self, path: Path) -> None:
        self.path = path

    def embed_face(self, jpeg: bytes, box: tuple[float, float, float, float]) -> Any:
        raise AssertionError("this test hands the console its samples")

    def embed_voice(self, pcm: np.ndarray, rate: int) -> Any:
        raise AssertionError("this test hands the console its samples")

    def enroll(self, name: str, kind: str, model_id: str, vectors: list[np.ndarray]) -> None:
        with Gallery(self.path) as g:
            for v in vectors:
                g.add(name, kind, model_id, v)

    def unenroll(self, name: str, kind: str, model_id: str, vectors: list[np.ndarray]) -> None:
        with Gallery(self.path) as g:
            g.remove_vectors(name, kind, model_id, vectors)

    def remove(self, name: str) -> bool:
        with Gallery(self.path) as g:
            return g.remove(name)

    def people(self) -> dict[str, dict[str, int]]:
        with Gallery(self.path) as g:
            return g.people()


class Rig:
    def __init__(
        self,
        tmp: Path,
        identity: Identity | None = None,
        *,
        access: Access | None = None,
        host: str = "127.0.0.1",
        media: bool = True,
        event_log: int = 20000,
        start_hub: bool = True,
    ) -> None:
        self.tmp = tmp
        self.address = f"ipc://{tmp}/hub"
        self.event_log = event_log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.identity = identity if identity is not None else GalleryIdentity(tmp / "gallery.db")
        self.store = Store(tmp / "console", media=media)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.hub: Hub | None = None
        self.call(self._start(access, host, start_hub))

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start_hub(self) -> None:
        self.hub = Hub(
            HubConfig(address=self.address, heartbeat=0.1, down_after=0.5, event_log=self.event_log),
            state_dir=self.tmp / "state",
        )
        await self.hub.start()

    async def _start(self, access: Access | None, host: str, start_hub: bool) -> None:
        if start_hub:  # else the test starts a deployment on ``address`` itself
            await self._start_hub()
        self.client = Client(self.address, name="console", heartbeat=0.1)
        await self.client.__aenter__()
        self.console = Console(self.client, self.store, self.identity, face_every=0.0)
        self.app = make_app(self.console, access or Access())
        ready = asyncio.Event()
        self.task = asyncio.create_task(serve(self.console, self.app, host, self.port, ready))
        async with asyncio.timeout(20):
            await ready.wait()
        self.publisher = Publisher(Endpoints.from_address(self.address))
        await asyncio.sleep(0.3)

    def publish(self, *msgs: Message) -> None:
        async def go() -> None:
            for m in msgs:
                if not m.time:
                    m.time = time.time()
                await self.publisher.publish(m)

        self.call(go())

    def restart_hub(self, down_s: float = 1.0) -> None:
        async def go() -> None:
            assert self.hub is not None
            await self.hub.stop()
            await asyncio.sleep(down_s)
            await self._start_hub()

        self.call(go())

    def wait(self, test: Any, timeout: float = 10.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if test():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out: {what}")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path.lstrip("/"), headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def post(self, path: str, body: bytes = b"{}") -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path.lstrip("/"), data=body, method="POST")
        req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def close(self) -> None:
        async def go() -> None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.publisher.close()
            await self.client.close()
            if self.hub is not None:
                await self.hub.stop()

        try:
            self.call(go(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.store.close()
