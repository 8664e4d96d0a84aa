"""The MCP server: LLM agents ask the house who is where, read what was said, speak, and ask a person.

A hub client (no model): it folds the hub's presence, face, speaker and transcript events into
``bridges.mcp.state.House`` and answers tools and resources from it, so a state query is a dict
look-up. It starts from the hub's presence snapshot, then reads the hub's log from its beginning
and stays on the live stream; a gap the log no longer holds takes the snapshot again.

Tools: ``who_is_home``, ``where_is``, ``room_occupants``, ``last_seen``, ``recent_transcripts``,
and, unless ``[mcp] speak = false``, ``say``, ``ask`` and ``stop``. ``ask`` speaks the question in
the room the person is in (``Say``), waits until the edge has played it (``playback`` ended), then
opens that room's microphones for the answer without a wake word (``Listen`` "open", the same claim
the Wyoming gateway makes for Home Assistant) and waits for the final transcript of that claim and
its speaker: ``answered`` (the person said it), ``someone_else`` (another voice, or one speaker ID
could not name), ``no_answer`` (no speech before the timeout) or ``not_home``.

Resources ``sensorium://room/{room}`` and ``sensorium://person/{name}`` hold the current state as
JSON; a client that subscribes gets ``notifications/resources/updated`` when the room's occupants or
the person's room change.

Every tool call (refused ones too) is published as an ``mcp_call`` event: tool, client, arguments,
outcome, duration, so the household sees in the event log what agents did.

Transports: streamable HTTP on ``/mcp`` and SSE on ``/sse`` (``/messages/``) from one HTTP server,
or stdio; ``bridges.mcp.access`` guards HTTP with a bearer token off loopback.
"""

# No "from __future__ import annotations": FastMCP reads the tools' annotations, and some name local types.
import asyncio
import contextlib
import json
import logging
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import anyio
from mcp import types
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.server.session import ServerSession
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AnyUrl, BaseModel, Field

from sensorium.bridges.mcp import state
from sensorium.bridges.mcp.access import BearerAuth, check_bind, is_loopback
from sensorium.pipeline.bus import Endpoints, Publisher
from sensorium.pipeline.client import Client
from sensorium.pipeline.clock import Clock
from sensorium.pipeline.config import McpConfig
from sensorium.pipeline.messages import (
    Event,
    EventsLost,
    Listen,
    McpCall,
    PlaybackStatus,
    SpeakerIdentified,
    Transcript,
)
from sensorium.pipeline.security import CurveKeys

log = logging.getLogger("sensorium.mcp")

MAX_TEXT = 1000
"""Longest text ``say`` and ``ask`` accept, characters."""
MAX_ASK_S = 120.0
SPEAKER_GRACE_S = 3.0
"""After an answer's final transcript, how long ``ask`` waits for its speaker event."""
INSTRUCTIONS = (
    "sensorium is the senses of this home: who is in which room (cameras, faces, voices), what was said "
    "(speech-to-text with speaker identification), and the rooms' loudspeakers. Use who_is_home / where_is / "
    "room_occupants / last_seen for presence, recent_transcripts for what was said, say to speak in a room or to "
    "a person, ask to put a question to a person and get their spoken answer, stop to silence a room."
)


# ---------------------------------------------------------------------------------------- results


class PersonAt(BaseModel):
    person: str = Field(description="Enrolled name")
    room: str = Field(description="Room they are in")
    since: str | None = Field(description="When they entered it (ISO 8601, UTC)")


class WhoIsHome(BaseModel):
    people: list[PersonAt] = Field(description="Known people at home and the room each is in")
    unknown: dict[str, int] = Field(description="Room → people seen there that nobody could name")
    total: int = Field(description="Everyone at home, known and unknown")


class WhereIs(BaseModel):
    person: str
    home: bool = Field(description="True when they are in one of the rooms")
    room: str | None = Field(description="The room they are in; null when not home")
    since: str | None = Field(description="When they entered that room (or left the last one), ISO 8601 UTC")


class RoomOccupants(BaseModel):
    room: str
    people: list[str] = Field(description="Known people in the room")
    unknown: int = Field(description="People in the room nobody could name")
    count: int = Field(description="Everyone in the room")
    occupied: bool


class LastSeen(BaseModel):
    person: str
    home: bool = Field(description="True when they are in a room now")
    room: str | None = Field(description="The room they are in now; null when not home")
    last_seen_room: str | None = Field(description="Where they were last seen or heard; null if never")
    last_seen_at: str | None = Field(description="When (ISO 8601 UTC); null if never")
    seconds_ago: float | None = Field(description="Seconds since then; null if never")
    seen_by: str | None = Field(description="What saw them: presence, face or voice")


class Utterance(BaseModel):
    time: str = Field(description="When it was said (ISO 8601 UTC)")
    room: str
    speaker: str = Field(description="Who said it: an enrolled name, or 'unknown'")
    text: str


class Transcripts(BaseModel):
    transcripts: list[Utterance] = Field(description="Final transcripts, oldest first")


class Said(BaseModel):
    answer_id: str = Field(description="Identifier of what is being spoken (stop it with stop)")
    room: str = Field(description="The room it is spoken in")


class Stopped(BaseModel):
    room: str


class Answer(BaseModel):
    status: Literal["answered", "someone_else", "no_answer", "not_home"] = Field(
        description="answered: the person answered; someone_else: another voice (or one nobody could name) "
        "answered; no_answer: nobody spoke before the timeout; not_home: the person is in no room, nothing was asked"
    )
    person: str
    room: str | None = Field(description="Where the question was asked; null when not home")
    answer: str = Field(description="The spoken answer as text ('' for no_answer and not_home)")
    speaker: str | None = Field(description="Who answered, as speaker identification named them")
    seconds: float = Field(description="From the call to the answer (or the timeout)")


# ------------------------------------------------------------------------------------------ server


def iso(t: float) -> str | None:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds") if t else None


def _text(value: str, what: str) -> str:
    text = " ".join(value.split())
    if not text:
        raise ToolError(f"{what} is empty: give the words to speak")
    if len(text) > MAX_TEXT:
        raise ToolError(f"{what} is {len(text)} characters long; at most {MAX_TEXT}")
    return text


def listen_socket(host: str, port: int) -> socket.socket:
    """The HTTP server's bound socket; ``OSError`` naming the address when it cannot be bound.

    Bound here, not by uvicorn: a port in use is an error to report, where uvicorn would end the whole process
    with ``sys.exit``. Made with ``IPPROTO_TCP`` as its protocol, as uvicorn's own ``loop.create_server(host,
    port)`` makes it from ``getaddrinfo``: asyncio sets ``TCP_NODELAY`` only on connections whose socket says
    so, and ``socket.socket(AF_INET)`` says protocol 0. Without it every response that the server writes in
    two pieces (headers, then the body; an SSE event after the last) waited for the client's delayed ACK:
    about 40 ms added to each tool call over SSE and to plain JSON-RPC posts.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class _QuietClientClose(logging.Filter):
    """Drops the SDK's ERROR for a streamable-HTTP client that ended its session normally.

    A client closing its session (``DELETE /mcp``, what the SDK's client does on exit) makes the SDK close the
    session's streams; its writer for the client's standalone GET stream then ends in ``ClosedResourceError``,
    which the SDK logs as "Error in standalone SSE writer" with a traceback. Any other error there stays.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != "Error in standalone SSE writer" or not record.exc_info:
            return True
        if isinstance(record.exc_info[1], anyio.ClosedResourceError):
            log.debug("a client closed its session's standalone SSE stream")
            return False
        return True


def quiet_client_closes() -> None:
    """Install ``_QuietClientClose`` on the SDK's streamable-HTTP logger (once)."""
    sdk = logging.getLogger("mcp.server.streamable_http")
    if not any(isinstance(f, _QuietClientClose) for f in sdk.filters):
        sdk.addFilter(_QuietClientClose())


OUTPUT_SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"
"""``$schema`` of the tools' output schemas. The MCP SDK's client (1.x) checks every structured result with
``jsonschema.validate``, which first checks the schema itself against its dialect's metaschema on every call:
against 2020-12 (the default without ``$schema``) that took 7-22 ms a call on this project's 2-core machine
under load, against draft 7 1.5-3 ms. The schemas pydantic writes for the results use nothing draft 7 lacks
(``$defs`` is found by its JSON pointer; no ``$ref`` has sibling keywords)."""


class _Server(FastMCP):
    """FastMCP whose every tool call goes through ``SensoriumMcp._called`` (timed, logged as an event)."""

    owner: "SensoriumMcp"

    async def list_tools(self) -> list[types.Tool]:
        tools = await super().list_tools()
        for tool in tools:
            if tool.outputSchema is not None and "$schema" not in tool.outputSchema:
                tool.outputSchema = {"$schema": OUTPUT_SCHEMA_DIALECT, **tool.outputSchema}
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        ctx = self.get_context()
        t0 = time.perf_counter()
        try:
            result = await super().call_tool(name, arguments)
        except Exception as exc:
            await self.owner._called(ctx, name, arguments, t0, str(exc))
            raise
        await self.owner._called(ctx, name, arguments, t0, "")
        if isinstance(result, tuple) and len(result) == 2:
            # (text, structured) from a tool's pydantic result: it was built and validated by its model already,
            # so hand the SDK a finished result; it would validate it against the JSON schema again (about 10 ms,
            # most of a call, re-checking the schema itself each time).
            content, structured = result
            return types.CallToolResult(content=list(content), structuredContent=structured, isError=False)
        return result


class SensoriumMcp:
    """One house's MCP server."""

    def __init__(
        self,
        config: McpConfig,
        rooms: Iterable[str],
        hub: str | Endpoints,
        *,
        microphones: dict[str, list[str]] | None = None,
        people: Callable[[], Iterable[str]] | None = None,
        token: str | None = None,
        curve: CurveKeys | None = None,
        heartbeat: float = 0.5,
        clock: Clock | None = None,
    ) -> None:
        self.cfg = config
        self.rooms = list(rooms)
        self.hub = hub
        self.microphones = microphones or {}
        self._people_source = people or list
        self.token = token
        self.curve = curve
        self.heartbeat = heartbeat
        self.clock = clock
        self.name = config.name
        self.ask_timeout = float(config.ask_timeout)
        self.house = state.House(self.rooms, config.transcripts)
        self.client: Client | None = None
        self._publisher: Publisher | None = None
        self._ready = asyncio.Event()
        self._listeners: set[Callable[[Event], None]] = set()
        self._subs: dict[str, set[ServerSession]] = {}
        self._asking: set[str] = set()
        self._enrolled: set[str] = set()
        self._enrolled_at = 0.0
        self.calls = 0
        """Tool calls served."""
        self.timings: deque[tuple[str, float]] = deque(maxlen=10000)
        """(tool, milliseconds in the server) of the latest calls."""
        self.mcp = self._build()
        quiet_client_closes()

    # ------------------------------------------------------------------------------- lifecycle

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator["SensoriumMcp"]:
        """Connect to the hub and follow its events while the block runs."""
        endpoints = self.hub if isinstance(self.hub, Endpoints) else Endpoints.from_address(self.hub)
        async with Client(endpoints, name=self.name, curve=self.curve, clock=self.clock, heartbeat=self.heartbeat) as c:
            self.client = c
            self._publisher = Publisher(endpoints, curve=self.curve)
            await self._publisher.wait_ready()
            reader = asyncio.create_task(self._follow(c), name="mcp-events")
            try:
                yield self
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                self._publisher.close()
                self._publisher = None
                self.client = None

    async def wait_ready(self, timeout: float = 30.0) -> bool:
        """Wait until the state holds the hub's snapshot and its log up to when the server started."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        return self._ready.is_set()

    async def _follow(self, c: Client) -> None:
        types = [*state.EVENT_TYPES, "playback"]
        while True:
            try:
                if not await c.wait_connected(10.0):
                    log.warning("hub at %s is not answering; waiting for it", c.endpoints.control)
                    continue
                if not self._ready.is_set():  # who is where, then everything the log still holds
                    self._notify(self.house.rebase(await c.snapshot()))
                    for ev in await c.backlog(self.house.seq, types):
                        if not isinstance(ev, EventsLost):  # older than the snapshot: nothing to redo
                            self._notify(self.house.apply(ev))
                        self.house.seq = max(self.house.seq, ev.seq)
                    self._ready.set()
                async for ev in c.events(types, since=self.house.seq):
                    if isinstance(ev, EventsLost):  # away too long: who is where comes from the snapshot again
                        log.warning("hub events %d..%d lost; presence from the snapshot", ev.first_seq, ev.last_seq)
                        self._notify(self.house.rebase(await c.snapshot()))
                        self.house.seq = max(self.house.seq, ev.seq)
                        continue
                    self._notify(self.house.apply(ev))
                    for listener in list(self._listeners):
                        listener(ev)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("hub event stream interrupted (%s); resuming after event %d", exc, self.house.seq)
                await asyncio.sleep(1.0)

    # ---------------------------------------------------------------------------- transports

    def http_app(self) -> Any:
        """One ASGI app: streamable HTTP on ``/mcp``, SSE on ``/sse`` + ``/messages/``; bearer token if set."""
        from starlette.applications import Starlette

        streamable = self.mcp.streamable_http_app()
        sse = self.mcp.sse_app()
        manager = self.mcp.session_manager

        @contextlib.asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[None]:
            async with manager.run():
                yield

        app = Starlette(routes=[*streamable.routes, *sse.routes], lifespan=lifespan)
        return BearerAuth(app, self.token) if self.token else app

    async def serve_http(self, host: str, port: int, started: asyncio.Event | None = None) -> None:
        """Serve both HTTP transports until cancelled; ``OSError`` naming the address when it cannot listen."""
        import uvicorn

        check_bind(host, self.token)
        sock = listen_socket(host, port)
        config = uvicorn.Config(self.http_app(), log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if task.done():
                    with contextlib.suppress(SystemExit):
                        await task
                    raise OSError(f"the MCP server could not start on {host}:{port} (see the log above)")
                await asyncio.sleep(0.02)
            if started is not None:
                started.set()
            await asyncio.shield(task)  # cancelled: uvicorn is asked to exit below, and closes its connections
        finally:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError, Exception, SystemExit):
                async with asyncio.timeout(5.0):
                    await asyncio.shield(task)
            task.cancel()
            sock.close()

    async def serve_stdio(self) -> None:
        """Serve one client on this process's stdin/stdout."""
        await self.mcp.run_stdio_async()

    # ------------------------------------------------------------------------------ the server

    def _build(self) -> FastMCP:
        host = self.cfg.host
        security = (
            TransportSecuritySettings(
                enable_dns_rebinding_protection=True,
                allowed_hosts=sorted({f"{host}:*", "127.0.0.1:*", "localhost:*", "[::1]:*"}),
                allowed_origins=sorted({f"http://{host}:*", "http://127.0.0.1:*", "http://localhost:*"}),
            )
            if is_loopback(host)
            else TransportSecuritySettings(enable_dns_rebinding_protection=False)  # the bearer token guards it
        )
        mcp = _Server(
            self.name,
            instructions=INSTRUCTIONS,
            host=host,
            port=self.cfg.port,
            transport_security=security,
            log_level="WARNING",  # the SDK logs every request at INFO
        )
        mcp.owner = self
        self._tools(mcp)
        self._resources(mcp)
        low = mcp._mcp_server

        @low.subscribe_resource()
        async def subscribe(uri: AnyUrl) -> None:
            key = self._key(str(uri))
            self._subs.setdefault(key, set()).add(low.request_context.session)

        @low.unsubscribe_resource()
        async def unsubscribe(uri: AnyUrl) -> None:
            self._subs.get(self._key(str(uri)), set()).discard(low.request_context.session)

        capabilities = low.get_capabilities

        def with_subscribe(*args: Any, **kwargs: Any) -> Any:
            caps = capabilities(*args, **kwargs)
            if caps.resources is not None:
                caps.resources.subscribe = True  # the SDK announces subscribe=False whatever is registered
            return caps

        low.get_capabilities = with_subscribe  # type: ignore[method-assign]
        return mcp

    def _key(self, uri: str) -> str:
        for kind in ("room", "person"):
            prefix = f"sensorium://{kind}/"
            if uri.startswith(prefix) and uri[len(prefix) :]:
                name = uri[len(prefix) :]
                if kind == "room":
                    self._room(name)
                else:
                    self._person(name)
                return f"{kind}:{name}"
        raise ValueError(f"no such resource {uri!r}: expected sensorium://room/<room> or sensorium://person/<name>")

    def _notify(self, keys: set[str]) -> None:
        for key in keys:
            sessions = self._subs.get(key)
            if not sessions:
                continue
            kind, _, name = key.partition(":")
            uri = AnyUrl(f"sensorium://{kind}/{name}")
            for session in list(sessions):
                asyncio.get_running_loop().create_task(self._send_update(session, key, uri))

    async def _send_update(self, session: ServerSession, key: str, uri: AnyUrl) -> None:
        try:
            await session.send_resource_updated(uri)
        except Exception as exc:  # the client went away
            log.info("dropping a subscription to %s: %s", uri, exc)
            self._subs.get(key, set()).discard(session)

    # -------------------------------------------------------------------------- validation

    def _room(self, room: Any) -> str:
        if not isinstance(room, str) or room not in self.rooms:
            raise ToolError(f"unknown room {room!r} (rooms: {', '.join(self.rooms)})")
        return room

    def known_people(self) -> list[str]:
        now = time.monotonic()
        if now - self._enrolled_at > 5.0:
            try:
                self._enrolled = {str(p) for p in self._people_source()}
                self._enrolled_at = now
            except Exception as exc:
                log.warning("could not read the enrolled people (%s); keeping %d", exc, len(self._enrolled))
        return sorted(self._enrolled | set(self.house.people))

    def _person(self, person: Any) -> str:
        if not isinstance(person, str) or not person.strip():
            raise ToolError("person is empty: give an enrolled person's name")
        known = self.known_people()
        if person not in known:
            lower = {p.lower(): p for p in known}
            if person.strip().lower() in lower:
                return lower[person.strip().lower()]
            raise ToolError(f"unknown person {person!r} (enrolled: {', '.join(known) or 'nobody'})")
        return person

    async def _state(self) -> state.House:
        if not await self.wait_ready(10.0):
            raise ToolError("the hub has not answered yet: no presence state to answer from")
        return self.house

    def _now(self) -> float:
        return self.client.clock.now() if self.client is not None else time.time()

    # ----------------------------------------------------------------------------------- tools

    def _tools(self, mcp: FastMCP) -> None:
        Person = Annotated[str, Field(description="An enrolled person's name, e.g. 'alice'")]
        Room = Annotated[str, Field(description=f"A room: one of {', '.join(self.rooms)}")]
        read_only = {"readOnlyHint": True, "openWorldHint": False}

        @mcp.tool(annotations=read_only)
        async def who_is_home() -> WhoIsHome:
            """Who is at home now and in which room, with people the cameras see but nobody could name."""
            house = await self._state()
            people = [
                PersonAt(person=n, room=r, since=iso(house.people[n].since)) for n, r in sorted(house.home().items())
            ]
            unknown = {r: c for r, c in house.unknown.items() if c}
            return WhoIsHome(people=people, unknown=unknown, total=len(people) + sum(unknown.values()))

        @mcp.tool(annotations=read_only)
        async def where_is(person: Person) -> WhereIs:
            """The room a person is in now (home: false when they are in no room)."""
            house = await self._state()
            name = self._person(person)
            p = house.people.get(name)
            room = house.where(name)
            return WhereIs(person=name, home=bool(room), room=room or None, since=iso(p.since) if p else None)

        @mcp.tool(annotations=read_only)
        async def room_occupants(room: Room) -> RoomOccupants:
            """Who is in a room now: the people it knows by name and a count of those it does not."""
            house = await self._state()
            room = self._room(room)
            names = house.occupants(room)
            unknown = house.unknown.get(room, 0)
            return RoomOccupants(
                room=room, people=names, unknown=unknown, count=len(names) + unknown, occupied=bool(names or unknown)
            )

        @mcp.tool(annotations=read_only)
        async def last_seen(person: Person) -> LastSeen:
            """When and where a person was last seen (camera, face) or heard (voice), and whether they are home."""
            house = await self._state()
            name = self._person(person)
            p = house.people.get(name) or state.PersonState()
            room = house.where(name)
            seen = p.seen_at or None
            return LastSeen(
                person=name,
                home=bool(room),
                room=room or None,
                last_seen_room=p.seen_room or None,
                last_seen_at=iso(p.seen_at),
                seconds_ago=round(self._now() - p.seen_at, 1) if seen else None,
                seen_by=p.seen_by or None,
            )

        @mcp.tool(annotations=read_only)
        async def recent_transcripts(
            room: Annotated[str, Field(description="Only what was said in this room ('' = every room)")] = "",
            person: Annotated[str, Field(description="Only what this person said ('' = anyone)")] = "",
            since: Annotated[
                float,
                Field(description="Only the last this-many seconds (600 = the last ten minutes; 0 = all kept)", ge=0),
            ] = 0,
            limit: Annotated[int, Field(description="At most this many, the newest", ge=1, le=200)] = 20,
        ) -> Transcripts:
            """What was said in the house recently (final speech-to-text, with who said it), oldest first."""
            house = await self._state()
            r = self._room(room) if room else None
            who = self._person(person) if person else None
            after = self._now() - since if since > 0 else 0.0
            out = [
                Utterance(time=iso(h.time) or "", room=h.room, speaker=h.speaker, text=h.text)
                for h in house.transcripts
                if (r is None or h.room == r) and (who is None or h.speaker == who) and h.time >= after
            ]
            return Transcripts(transcripts=out[-limit:])

        if not self.cfg.speak:
            return

        @mcp.tool(annotations={"readOnlyHint": False, "destructiveHint": False, "openWorldHint": True})
        async def say(
            text: Annotated[str, Field(description="What to say (plain sentences)")],
            room: Annotated[str, Field(description="Speak in this room")] = "",
            person: Annotated[str, Field(description="Or: speak wherever this person is")] = "",
        ) -> Said:
            """Speak text aloud in a room, or in the room a person is in (give room or person, not both)."""
            text = _text(text, "text")
            room = await self._target(room, person)
            assert self.client is not None
            answer_id = await self.client.say(room, text, person=self._person(person) if person else "")
            return Said(answer_id=answer_id, room=room)

        @mcp.tool(annotations={"readOnlyHint": False, "destructiveHint": False, "openWorldHint": True})
        async def stop(room: Room) -> Stopped:
            """Stop whatever is being spoken in a room."""
            room = self._room(room)
            assert self.client is not None
            await self.client.stop(room, reason="mcp")
            return Stopped(room=room)

        @mcp.tool(annotations={"readOnlyHint": False, "destructiveHint": False, "openWorldHint": True})
        async def ask(
            person: Person,
            question: Annotated[str, Field(description="The question to speak")],
            timeout: Annotated[
                float, Field(description="Seconds to wait for the spoken answer", ge=1, le=MAX_ASK_S)
            ] = self.ask_timeout,
        ) -> Answer:
            """Ask a person a question aloud in the room they are in and return their spoken answer (no wake word
            needed); status tells answered, someone_else answered, no_answer, or not_home."""
            return await self.ask(person, question, timeout)

    async def _target(self, room: str, person: str) -> str:
        if bool(room) == bool(person):
            raise ToolError("give either room or person (one of them)")
        if room:
            return self._room(room)
        house = await self._state()
        name = self._person(person)
        where = house.where(name)
        if not where:
            raise ToolError(f"{name} is not home (in no room): nothing was said")
        return where

    async def ask(self, person: str, question: str, timeout: float | None = None) -> Answer:
        """Speak ``question`` to ``person`` where they are and listen for the spoken answer."""
        t0 = time.monotonic()
        house = await self._state()
        name = self._person(person)
        question = _text(question, "question")
        limit = float(timeout) if timeout is not None else self.ask_timeout
        room = house.where(name)
        if not room:
            return Answer(status="not_home", person=name, room=None, answer="", speaker=None, seconds=0.0)
        assert self.client is not None and self._publisher is not None
        mics = self.microphones.get(room) or []
        if not mics:
            raise ToolError(f"room {room} has no microphone to hear the answer with")
        if room in self._asking:  # one claim per microphone: a second question would take the first one's answer
            raise ToolError(f"{room} is already waiting for the answer to another question; ask again after it")
        self._asking.add(room)
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._listeners.add(queue.put_nowait)
        rid = f"mcp-ask-{uuid.uuid4().hex[:10]}"
        try:
            async with asyncio.timeout(limit):
                answer_id = await self.client.say(room, question, person=name)
                start = await self._played(queue, answer_id)
                text, speaker = await self._listen(queue, room, mics, rid, start)
        except TimeoutError:
            text, speaker = "", None
        finally:
            self._asking.discard(room)
            self._listeners.discard(queue.put_nowait)
            for node in mics:  # whatever is still open for this question is not anyone's command
                await self._publisher.publish(
                    Listen(room=room, node=node, action="drop", request_id=rid, time=self._now(), source=self.name)
                )
        seconds = round(time.monotonic() - t0, 3)
        if not text:
            return Answer(status="no_answer", person=name, room=room, answer="", speaker=None, seconds=seconds)
        status: Literal["answered", "someone_else"] = "answered" if speaker == name else "someone_else"
        return Answer(status=status, person=name, room=room, answer=text, speaker=speaker, seconds=seconds)

    async def _played(self, queue: asyncio.Queue[Event], answer_id: str) -> float:
        """Hub time the question finished playing (the answer is listened for from then on)."""
        while True:
            ev = await queue.get()
            if isinstance(ev, PlaybackStatus) and ev.answer_id == answer_id and ev.state in ("ended", "stopped"):
                return max(ev.time, self._now() - 0.5)

    async def _listen(
        self, queue: asyncio.Queue[Event], room: str, mics: list[str], rid: str, start: float
    ) -> tuple[str, str | None]:
        """Open the room's microphones from ``start``; the first final transcript with words, and its speaker."""
        assert self._publisher is not None
        for node in mics:
            await self._publisher.publish(
                Listen(room=room, node=node, action="open", time=start, request_id=rid, source=self.name)
            )
        speakers: dict[str, tuple[str, float]] = {}
        while True:
            ev = await queue.get()
            if isinstance(ev, SpeakerIdentified) and ev.room == room:
                speakers[ev.utterance_id] = (ev.person, ev.score)
            if not (isinstance(ev, Transcript) and ev.final and ev.request_id == rid):
                continue
            if not ev.text.strip():  # silence ended that listening: listen again while there is time
                for node in mics:
                    await self._publisher.publish(
                        Listen(room=room, node=node, action="open", time=self._now(), request_id=rid, source=self.name)
                    )
                continue
            speaker = ev.speaker or speakers.get(ev.utterance_id, ("", 0.0))[0]
            if not speaker:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(SPEAKER_GRACE_S):
                        while not speaker:
                            e = await queue.get()
                            if isinstance(e, SpeakerIdentified) and e.utterance_id == ev.utterance_id:
                                speaker = e.person
            return ev.text.strip(), speaker or state.UNKNOWN

    # ---------------------------------------------------------------------------------- resources

    def room_state(self, room: str) -> dict[str, Any]:
        room = self._room(room)
        names = self.house.occupants(room)
        unknown = self.house.unknown.get(room, 0)
        return {"room": room, "people": names, "unknown": unknown, "count": len(names) + unknown}

    def person_state(self, person: str) -> dict[str, Any]:
        name = self._person(person)
        p = self.house.people.get(name) or state.PersonState()
        return {
            "person": name,
            "home": bool(p.room),
            "room": p.room or None,
            "since": iso(p.since),
            "last_seen_room": p.seen_room or None,
            "last_seen_at": iso(p.seen_at),
        }

    def _resources(self, mcp: FastMCP) -> None:
        def dump(obj: dict[str, Any]) -> str:
            return json.dumps(obj, sort_keys=True)

        @mcp.resource("sensorium://room/{room}", mime_type="application/json", name="room")
        async def room_resource(room: str) -> str:
            """A room now: the known people in it, the unknown count, everyone (subscribe: occupants change)."""
            await self._state()
            return dump(self.room_state(room))

        @mcp.resource("sensorium://person/{name}", mime_type="application/json", name="person")
        async def person_resource(name: str) -> str:
            """A person now: home or not, their room and since when, where last seen (subscribe: room changes)."""
            await self._state()
            return dump(self.person_state(name))

        def reader(room: str) -> Callable[[], Awaitable[str]]:
            async def read_room() -> str:
                await self._state()
                return dump(self.room_state(room))

            return read_room

        for room in self.rooms:
            mcp.resource(
                f"sensorium://room/{room}",
                name=f"room {room}",
                description=f"The {room.replace('_', ' ')} now: who is in it (JSON)",
                mime_type="application/json",
            )(reader(room))

    # ---------------------------------------------------------------------------------- logging

    async def _called(self, ctx: Context, tool: str, arguments: dict[str, Any], t0: float, error: str) -> None:
        self.calls += 1
        ms = (time.perf_counter() - t0) * 1000
        self.timings.append((tool, ms))
        who = self._client_name(ctx)
        args = json.dumps(arguments, default=str, sort_keys=True)
        if len(args) > 500:
            args = args[:497] + "..."
        if error:
            log.info("%s called %s(%s): refused: %s", who, tool, args, error)
        else:
            log.info("%s called %s(%s) in %.1f ms", who, tool, args, ms)
        if self._publisher is None:
            return
        ev = McpCall(
            time=self._now(),
            source=self.name,
            tool=tool,
            client=who,
            arguments=args,
            ok=not error,
            error=error[:500],
            duration_ms=round(ms, 3),
        )
        await self._publisher.publish(ev)

    @staticmethod
    def _client_name(ctx: Context) -> str:
        try:
            rc = ctx.request_context
        except ValueError:
            return "unknown"
        info = rc.session.client_params.clientInfo if rc.session.client_params else None
        name = f"{info.name} {info.version}".strip() if info else "unknown"
        request = rc.request
        peer = getattr(request, "client", None)
        where = f"http {peer.host}" if peer is not None else "stdio"
        return f"{name} ({where})"
