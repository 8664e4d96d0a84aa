"""A real Home Assistant for tests and benchmarks: HA core from ``.venv-homeassistant``, started, onboarded, driven.

``HomeAssistant(config_dir, extra_config).start()`` writes a minimal ``configuration.yaml`` (no
``default_config``: only HTTP on a free loopback port, the API and what ``extra_config`` adds), runs
``hass -c DIR --skip-pip``, waits until it answers, and onboards it the way the frontend does (owner
user, auth code → token, the remaining onboarding steps), ending with a long-lived access token. (Finishing
the core_config step starts the flows HA offers a new user, met, radio_browser, google_translate; without
their libraries, which --skip-pip does not install, they fail in HA's log, harmlessly.) Then:

* ``await ha.request("GET", "/api/config")``: REST with the token; ``await ha.ws("config/entity_registry/list")``
  and ``async with ha.websocket() as ws``: the WebSocket API (``ws.call``, ``ws.subscribe_events``);
* ``await ha.add_integration("mqtt", {"broker": "127.0.0.1", "port": 1883})``: the config-flow REST API,
  one dict of user input per form, until the entry is created and loaded;
* ``await ha.states()``, ``await ha.wait_for_state(entity_id, predicate, timeout)``: ``/api/states``;
* ``ha.stop()``: a clean shutdown; ``ha.log_tail()``: the end of HA's log for a failing test.

The ``home_assistant`` fixture in ``conftest.py`` starts one per test file (module scope) with the
file's ``HOMEASSISTANT_CONFIG`` YAML, and a failing test's report shows HA's log tail.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
import json
import os
import signal
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from sensorium.evaluation.ports import free_port

REPO = Path(__file__).resolve().parents[1]
HA_VENV = REPO / ".venv-homeassistant"
HASS = HA_VENV / "bin" / "hass"
OWNER = {"name": "Test Owner", "username": "owner", "password": "sensorium-test-password", "language": "en"}
"""The owner account onboarding creates."""

#: The configuration every harness instance starts from; ``extra_config`` is appended as is.
BASE_CONFIG = """\
homeassistant:
  name: sensorium tests
  latitude: 52.37
  longitude: 4.89
  elevation: 0
  unit_system: metric
  time_zone: UTC
  country: NL
  currency: EUR
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
config:
logger:
  default: warning
  logs:
    homeassistant.bootstrap: info
    homeassistant.setup: info
"""


class HomeAssistantError(RuntimeError):
    """Home Assistant did not start, refused a call, or a state never came; the text says which."""


# ------------------------------------------------------------------------------------------ WebSocket


class WebSocket:
    """A minimal RFC 6455 client (text messages, ping/pong, close): all HA's WebSocket API needs.

    The project's venv has no WebSocket library, and this is ~60 lines over asyncio streams.
    """

    _GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int, path: str, timeout: float = 10.0) -> WebSocket:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await writer.drain()
        async with asyncio.timeout(timeout):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status, *lines = head.strip().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        accept = base64.b64encode(hashlib.sha1((key + cls._GUID).encode()).digest()).decode()
        if " 101 " not in status or headers.get("sec-websocket-accept") != accept:
            writer.close()
            raise HomeAssistantError(f"WebSocket upgrade of {path} refused: {status}")
        return cls(reader, writer)

    async def _frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)  # clients must mask every frame
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(head + mask + body)
        await self.writer.drain()

    async def send(self, text: str) -> None:
        await self._frame(0x1, text.encode())

    async def recv(self) -> str:
        parts: list[bytes] = []
        while True:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(n)  # servers never mask
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("Home Assistant closed the WebSocket")
            if opcode == 0x9:
                await self._frame(0xA, payload)
                continue
            if opcode in (0x1, 0x2, 0x0):
                parts.append(payload)
                if b0 & 0x80:
                    return b"".join(parts).decode()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._frame(0x8, struct.pack("!H", 1000))
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


class HomeAssistantWebSocket:
    """An authenticated connection to HA's WebSocket API."""

    def __init__(self, sock: WebSocket) -> None:
        self.sock = sock
        self._id = 0
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read(), name="ha-websocket")

    async def _read(self) -> None:
        try:
            while True:
                msg = json.loads(await self.sock.recv())
                if msg.get("type") == "event" and msg.get("id") in self._events:
                    self._events[msg["id"]].put_nowait(msg["event"])
                elif msg.get("type") == "result" and msg.get("id") in self._replies:
                    fut = self._replies.pop(msg["id"])
                    if not fut.done():
                        fut.set_result(msg)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            for fut in self._replies.values():
                if not fut.done():
                    fut.set_exception(HomeAssistantError(f"WebSocket closed: {exc}"))

    async def call(self, type_: str, timeout: float = 30.0, **fields: Any) -> Any:
        """Send one command and return its ``result``; ``HomeAssistantError`` with HA's error otherwise."""
        return await self._call(type_, timeout, None, fields)

    async def _call(
        self, type_: str, timeout: float, events: asyncio.Queue[dict[str, Any]] | None, fields: dict[str, Any]
    ) -> Any:
        self._id += 1
        msg_id = self._id
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[msg_id] = fut
        if events is not None:
            self._events[msg_id] = events  # before sending: the first event may follow the result at once
        await self.sock.send(json.dumps({"id": msg_id, "type": type_, **fields}))
        async with asyncio.timeout(timeout):
            reply = await fut
        if not reply.get("success"):
            self._events.pop(msg_id, None)
            raise HomeAssistantError(f"WebSocket {type_} failed: {reply.get('error')}")
        return reply.get("result")

    async def subscribe_events(self, event_type: str | None = None) -> asyncio.Queue[dict[str, Any]]:
        """A queue that receives every event of ``event_type`` (all events when None) from now on."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await self._call("subscribe_events", 30.0, queue, {"event_type": event_type} if event_type else {})
        return queue

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.sock.close()


# ------------------------------------------------------------------------------------------ the server


class HomeAssistant:
    """One Home Assistant process in ``config_dir``."""

    def __init__(self, config_dir: str | Path, extra_config: str = "", *, port: int | None = None) -> None:
        self.config_dir = Path(config_dir)
        self.extra_config = extra_config
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""
        """Long-lived access token of the owner (valid for the whole run)."""
        self.start_seconds = 0.0
        """From launching ``hass`` to its API answering (onboarding excluded)."""
        self.onboard_seconds = 0.0
        """Onboarding through the REST API, token included."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.config_dir / "home-assistant.log"

    @property
    def console_file(self) -> Path:
        return self.config_dir / "hass.console.log"

    def _log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def log_tail(self, lines: int = 80) -> str:
        """The last ``lines`` of HA's log and console output (tracebacks of a crash land on the console)."""
        out = []
        for f in (self.log_file, self.console_file):
            if f.exists():
                text = f.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {f} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(out) or f"(no log in {self.config_dir})"

    # ------------------------------------------------------------------------------- start / stop

    def start(self, timeout: float = 180.0) -> HomeAssistant:
        """Launch, wait for the API, onboard; ``HomeAssistantError`` with the log tail if it does not come up."""
        if not HASS.exists():
            raise HomeAssistantError(f"{HASS} is missing: run scripts/setup.sh (it builds .venv-homeassistant)")
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "configuration.yaml").write_text(
            BASE_CONFIG.format(port=self.port) + (self.extra_config.rstrip() + "\n" if self.extra_config else "")
        )
        t0 = time.monotonic()
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        with open(self.console_file, "ab") as console:
            self.proc = subprocess.Popen(
                [str(HASS), "-c", str(self.config_dir), "--skip-pip"],
                stdout=console,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # a test's Ctrl-C is for pytest; stop() ends HA cleanly
            )
        try:
            self._wait_answering(t0 + timeout)
            self.start_seconds = time.monotonic() - t0
            t1 = time.monotonic()
            self._onboard()
            self.onboard_seconds = time.monotonic() - t1
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_answering(self, deadline: float) -> None:
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                raise HomeAssistantError(f"hass exited with {self.proc.returncode} while starting\n{self.log_tail()}")
            try:
                r = httpx.get(f"{self.url}/api/onboarding", timeout=2.0)
                if r.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or "Failed to create HTTP server" in self._log_text():
                raise HomeAssistantError(f"Home Assistant did not answer on {self.url}\n{self.log_tail()}")
            time.sleep(0.1)

    def _onboard(self) -> None:
        """What the frontend does on first start: owner, token, the remaining steps; then a long-lived token."""
        client_id = f"{self.url}/"
        with httpx.Client(base_url=self.url, timeout=30.0) as http:
            r = http.post("/api/onboarding/users", json={**OWNER, "client_id": client_id})
            _check(r, "onboarding: creating the owner")
            r = http.post(
                "/auth/token",
                data={"grant_type": "authorization_code", "code": r.json()["auth_code"], "client_id": client_id},
            )
            _check(r, "onboarding: exchanging the auth code for a token")
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            for step, body in (
                ("core_config", {}),
                ("analytics", {}),
                ("integration", {"client_id": client_id, "redirect_uri": f"{client_id}?auth_callback=1"}),
            ):
                _check(http.post(f"/api/onboarding/{step}", json=body, headers=auth), f"onboarding step {step}")
            left = [s["step"] for s in http.get("/api/onboarding").json() if not s["done"]]
            if left:
                raise HomeAssistantError(f"onboarding steps still open: {left}")
            self.token = auth["Authorization"].removeprefix("Bearer ")
        # the access token lives 30 minutes; a test file may run longer
        self.token = _in_thread(self.ws("auth/long_lived_access_token", client_name="sensorium tests", lifespan=3650))

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (HA shuts down cleanly), SIGKILL if it takes longer than ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> HomeAssistant:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------ REST

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def request(self, method: str, path: str, json_body: Any = None, timeout: float = 30.0) -> Any:
        """One REST call with the owner's token; the decoded JSON answer (or text)."""
        async with httpx.AsyncClient(base_url=self.url, headers=self._headers(), timeout=timeout) as http:
            r = await http.request(method, path, json=json_body)
        _check(r, f"{method} {path}")
        try:
            return r.json()
        except ValueError:
            return r.text

    async def states(self) -> dict[str, dict[str, Any]]:
        """Every entity's state object from ``/api/states``, by entity id."""
        return {s["entity_id"]: s for s in await self.request("GET", "/api/states")}

    async def state(self, entity_id: str) -> dict[str, Any] | None:
        """One entity's state object, None if HA does not know it."""
        try:
            return await self.request("GET", f"/api/states/{entity_id}")  # type: ignore[no-any-return]
        except HomeAssistantError as exc:
            if "404" in str(exc):
                return None
            raise

    async def wait_for_state(
        self,
        entity_id: str,
        predicate: str | Callable[[dict[str, Any] | None], bool],
        timeout: float = 30.0,
        interval: float = 0.1,
    ) -> dict[str, Any] | None:
        """Poll ``/api/states/<entity_id>`` until ``predicate`` (a state value, or a test of the state object) holds."""
        test: Callable[[dict[str, Any] | None], bool] = (
            (lambda s: s is not None and s["state"] == predicate) if isinstance(predicate, str) else predicate
        )
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while True:
            last = await self.state(entity_id)
            if test(last):
                return last
            if time.monotonic() > deadline:
                want = repr(predicate) if isinstance(predicate, str) else "the predicate"
                got = "no such entity" if last is None else f"state {last['state']!r}, attributes {last['attributes']}"
                raise HomeAssistantError(f"{entity_id} did not reach {want} within {timeout:g}s ({got})")
            await asyncio.sleep(interval)

    async def add_integration(self, domain: str, *user_inputs: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        """Add ``domain`` through the config-flow REST API, answering each form with the next dict.

        Returns the created config entry once HA has loaded it.
        """
        r = await self.request("POST", "/api/config/config_entries/flow", {"handler": domain})
        answers = list(user_inputs)
        while r.get("type") in ("form", "menu"):
            if r.get("errors"):
                raise HomeAssistantError(f"{domain} config flow, step {r['step_id']}: {r['errors']}")
            if not answers:
                raise HomeAssistantError(f"{domain} config flow asks for step {r['step_id']} ({r.get('data_schema')})")
            r = await self.request("POST", f"/api/config/config_entries/flow/{r['flow_id']}", answers.pop(0))
        if r.get("type") != "create_entry":
            raise HomeAssistantError(f"{domain} config flow ended with {r.get('type')}: {r.get('reason') or r}")
        entry_id = r["result"]["entry_id"]
        deadline = time.monotonic() + timeout
        while True:
            entries = await self.request("GET", f"/api/config/config_entries/entry?domain={domain}")
            entry = next((e for e in entries if e["entry_id"] == entry_id), None)
            if entry is not None and entry["state"] == "loaded":
                return entry  # type: ignore[no-any-return]
            if entry is not None and entry["state"] in ("setup_error", "setup_retry", "migration_error"):
                raise HomeAssistantError(f"{domain} entry did not load: {entry['state']} {entry.get('reason')}")
            if time.monotonic() > deadline:
                raise HomeAssistantError(f"{domain} entry not loaded within {timeout:g}s: {entry}")
            await asyncio.sleep(0.1)

    # ------------------------------------------------------------------------------- WebSocket

    @contextlib.asynccontextmanager
    async def websocket(self) -> AsyncIterator[HomeAssistantWebSocket]:
        """An authenticated WebSocket API connection."""
        sock = await WebSocket.connect("127.0.0.1", self.port, "/api/websocket")
        try:
            hello = json.loads(await sock.recv())
            if hello.get("type") != "auth_required":
                raise HomeAssistantError(f"unexpected WebSocket greeting: {hello}")
            await sock.send(json.dumps({"type": "auth", "access_token": self.token}))
            answer = json.loads(await sock.recv())
            if answer.get("type") != "auth_ok":
                raise HomeAssistantError(f"WebSocket authentication failed: {answer}")
        except BaseException:
            await sock.close()
            raise
        ws = HomeAssistantWebSocket(sock)
        try:
            yield ws
        finally:
            await ws.close()

    async def ws(self, type_: str, **fields: Any) -> Any:
        """One WebSocket command on its own connection; its result."""
        async with self.websocket() as ws:
            return await ws.call(type_, **fields)


def _check(r: httpx.Response, what: str) -> None:
    if r.status_code >= 400:
        raise HomeAssistantError(f"{what}: HTTP {r.status_code} {r.text[:500]}")


def _in_thread(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, whether or not this thread runs an event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@contextlib.contextmanager
def running(config_dir: str | Path, extra_config: str = "", timeout: float = 180.0) -> Iterator[HomeAssistant]:
    """A started, onboarded Home Assistant for the duration of the block."""
    ha = HomeAssistant(config_dir, extra_config)
    ha.start(timeout)
    try:
        yield ha
    finally:
        ha.stop()


# ------------------------------------------------------------------- the rig around sensorium's devices
# What the Home Assistant tests and benchmarks of the Wyoming and ESPHome bridges set up alike.


async def entities_of(ha: HomeAssistant, entry_ids: dict[str, str], timeout: float = 30.0) -> dict[str, list[str]]:
    """Entity ids of each of our config entries (by the role/room it was added for).

    An entry sets its entities up after the config flow returns (an ESPHome device connects again first):
    waits up to ``timeout`` s until every entry has some, and until their number stops changing."""
    deadline = time.monotonic() + timeout
    last: dict[str, list[str]] = {}
    while True:
        registry = await ha.ws("config/entity_registry/list")
        by_entry: dict[str, list[str]] = {}
        for e in registry:
            by_entry.setdefault(e.get("config_entry_id") or "", []).append(e["entity_id"])
        got = {key: sorted(by_entry.get(entry_id, [])) for key, entry_id in entry_ids.items()}
        if (all(got.values()) and got == last) or time.monotonic() > deadline:
            return got
        last = got
        await asyncio.sleep(0.3)


async def add_wyoming(ha: HomeAssistant, ports: dict[str, int]) -> dict[str, str]:
    """Each of sensorium's Wyoming ports added to HA's Wyoming integration, as a user does: key → entry id."""
    out = {}
    for key, port in ports.items():
        out[key] = (await ha.add_integration("wyoming", {"host": "127.0.0.1", "port": port}))["entry_id"]
    return out


async def prefer_sensorium_pipeline(
    ws: Any, entities: dict[str, list[str]], *, agent: str | None = None, name: str = "sensorium"
) -> dict[str, Any]:
    """An Assist pipeline of sensorium's speech-to-text, conversation agent and text-to-speech (the entities of
    the ``stt``, ``handle`` and ``tts`` entries), made HA's preferred one, over an open WebSocket ``ws``.
    ``agent``: another conversation agent (``conversation.home_assistant``: HA's own intents, its timers)."""
    pipeline = await ws.call(
        "assist_pipeline/pipeline/create",
        conversation_engine=agent or entities["handle"][0],
        conversation_language="en",
        language="en",
        name=name,
        stt_engine=entities["stt"][0],
        stt_language="en",
        tts_engine=entities["tts"][0],
        tts_language="en",
        tts_voice=None,
        wake_word_entity=None,
        wake_word_id=None,
    )
    await ws.call("assist_pipeline/pipeline/set_preferred", pipeline_id=pipeline["id"])
    return pipeline


async def last_pipeline_run(ha: HomeAssistant, pipeline: dict[str, Any]) -> dict[str, Any]:
    """The latest run of an Assist ``pipeline`` as HA's debug view shows it (its events with their timestamps)."""
    async with ha.websocket() as ws:
        runs = (await ws.call("assist_pipeline/pipeline_debug/list", pipeline_id=pipeline["id"]))["pipeline_runs"]
        return await ws.call(
            "assist_pipeline/pipeline_debug/get",
            pipeline_id=pipeline["id"],
            pipeline_run_id=runs[-1]["pipeline_run_id"],
        )


def wavs(folder: Path) -> set[Path]:
    """The WAV files an edge's player wrote to ``folder`` so far."""
    return set(folder.glob("*.wav")) if folder.exists() else set()


async def played(folder: Path, before: set[Path], timeout: float = 60.0) -> Path:
    """The next WAV file the edge wrote to ``folder``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = sorted(wavs(folder) - before)
        if new:
            await asyncio.sleep(0.5)  # written whole
            return new[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"nothing played in {folder} within {timeout:g} s")


class Mic:
    """A room's microphone node: a quiet room on the bus in real time (80 ms blocks), and what is ``say``-d."""

    def __init__(self, pub: Any, clock: Any, room: str, node: str) -> None:
        from sensorium.evaluation import media

        self.pub, self.clock, self.room, self.node = pub, clock, room, node
        self.pending = np.zeros(0, np.int16)
        self.room_noise = media.noise(60.0, dbfs=-60, color="pink")

    def say(self, pcm: np.ndarray) -> None:
        self.pending = np.concatenate([self.pending, pcm])

    async def run(self) -> None:
        from sensorium.evaluation import media
        from sensorium.pipeline.messages import AudioChunk

        block, rate = 1280, media.RATE
        t0, m0, i = self.clock.now(), time.monotonic(), 0
        while True:
            room = self.room_noise[(i % len(self.room_noise)) : (i % len(self.room_noise)) + block]
            if len(room) < block:
                room = np.resize(room, block)
            if len(self.pending):
                piece, self.pending = self.pending[:block], self.pending[block:]
                room = media.mix(np.pad(piece, (0, block - len(piece))), room)
            data = room.astype(np.int16).tobytes()
            await self.pub.publish(
                AudioChunk(room=self.room, source=self.node, time=t0 + i / rate, rate=rate, data=data)
            )
            i += block
            await asyncio.sleep(max(0.0, m0 + i / rate - time.monotonic()))


@contextlib.asynccontextmanager
async def wyoming_gateway(
    dep: Any, endpoints: Any, offer: Any = None, down_after: float | None = None, **kw: Any
) -> AsyncIterator[Any]:
    """sensorium's Wyoming gateway for ``dep`` on ``endpoints`` (what ``offer_for`` says its stages offer, unless
    ``offer``), started; stopped on exit. ``down_after``: how soon it counts a silent stage as down."""
    from sensorium.bridges.wyoming.server import Server
    from sensorium.bridging import offer_for

    gw = Server(dep, offer or offer_for(dep), endpoints=endpoints, **kw)
    if down_after is not None:
        gw.bus.down_after = down_after
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()
