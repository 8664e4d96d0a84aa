"""The MCP server against a real hub, called with the MCP SDK's own client (streamable HTTP, SSE, stdio).

The session: the sample's two rooms and three enrolled voices (``evaluation.session``): joe and rob in
the kitchen, sara and one person nobody could name in the living room; each of the sample's utterances
is heard in its room, attributed to its speaker. Events enter the hub the way the stages publish
them (a ``Publisher`` on the hub's bus, numbered by the hub's log), and the answers are checked
against those labels.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client
from pydantic import AnyUrl

from sensorium.bridges.mcp.access import AccessError, check_bind, is_loopback, read_token
from sensorium.bridges.mcp.server import SensoriumMcp
from sensorium.evaluation.ports import free_port
from sensorium.evaluation.session import SAMPLE_UTTERANCES
from sensorium.pipeline.bus import Publisher, Subscriber
from sensorium.pipeline.client import Client
from sensorium.pipeline.config import McpConfig
from sensorium.pipeline.hub import Hub
from sensorium.pipeline.messages import McpCall, Presence, Say, SpeakerIdentified, StopPlayback, Transcript

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ["kitchen", "living_room"]
PEOPLE = ["joe", "rob", "sara"]
WHERE = {"joe": "kitchen", "rob": "kitchen", "sara": "living_room"}
TOKEN = "s3cret-token-for-the-mcp-tests"
STATE_TOOLS = {"who_is_home", "where_is", "room_occupants", "last_seen", "recent_transcripts"}
SPEAK_TOOLS = {"say", "ask", "stop"}


def presence(hub: Hub, person: str, room: str, state: str = "entered", unknown: int = 0) -> Presence:
    return Presence(
        time=hub.clock.now(), room=room, source="presence", person=person, state=state, unknown=unknown,  # type: ignore[arg-type]
        confidence=0.9 if state != "left" else 0.0, sources=["face"],
    )  # fmt: skip


async def play_session(hub: Hub, pub: Publisher) -> int:
    """The two-room session: presence, then every utterance of the sample with its speaker."""
    for person, room in WHERE.items():
        await pub.publish(presence(hub, person, room, unknown=1 if room == "living_room" else 0))
        await asyncio.sleep(0.01)
    for k, (room, person, _wake, command) in enumerate(SAMPLE_UTTERANCES):
        uid = f"utt-{k}"
        await pub.publish(SpeakerIdentified(time=hub.clock.now(), room=room, source="speaker", utterance_id=uid,
                                            person=person, score=0.8))  # fmt: skip
        await pub.publish(Transcript(time=hub.clock.now(), room=room, source="stt", utterance_id=uid, final=True,
                                     text=command, speaker=person))  # fmt: skip
        await asyncio.sleep(0.01)
    want = len(WHERE) + 2 * len(SAMPLE_UTTERANCES)
    async with asyncio.timeout(10):
        while hub.log.last_seq < want:  # the hub has numbered and logged all of it
            await asyncio.sleep(0.02)
    return hub.log.last_seq


@pytest.fixture
async def pub(hub: Hub) -> AsyncIterator[Publisher]:
    p = Publisher(hub.endpoints)
    await asyncio.sleep(0.2)
    yield p
    p.close()


@contextlib.asynccontextmanager
async def serving(hub: Hub, **cfg: Any) -> AsyncIterator[tuple[SensoriumMcp, str]]:
    token = cfg.pop("token", None)
    host = cfg.pop("host", "127.0.0.1")
    config = McpConfig(host=host, port=free_port(), ask_timeout="5s", **cfg)
    server = SensoriumMcp(
        config, ROOMS, hub.endpoints, microphones={"kitchen": ["kitchen-pi"], "living_room": ["living-pi"]},
        people=lambda: PEOPLE, token=token, heartbeat=0.1, clock=hub.clock,
    )  # fmt: skip
    async with server.connected():
        started = asyncio.Event()
        task = asyncio.create_task(server.serve_http(host, config.port, started))
        async with asyncio.timeout(10):
            await started.wait()
        assert await server.wait_ready(10)
        try:
            yield server, f"http://{host}:{config.port}"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def session(url: str, headers: dict[str, str] | None = None, **kw: Any) -> AsyncIterator[ClientSession]:
    async with (
        streamablehttp_client(f"{url}/mcp", headers=headers) as (read, write, _),
        ClientSession(read, write, read_timeout_seconds=timedelta(seconds=20), **kw) as s,
    ):
        await s.initialize()
        yield s


async def call(s: ClientSession, tool: str, **args: Any) -> dict[str, Any]:
    r = await s.call_tool(tool, args)
    assert not r.isError, r.content
    assert r.structuredContent is not None
    return r.structuredContent


async def refused(s: ClientSession, tool: str, **args: Any) -> str:
    r = await s.call_tool(tool, args)
    assert r.isError, r
    return " ".join(c.text for c in r.content if isinstance(c, types.TextContent))


async def settle(server: SensoriumMcp, seq_at_least: int) -> None:
    async with asyncio.timeout(10):
        while server.house.seq < seq_at_least:
            await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------------- state


async def test_tools_over_streamable_http_answer_from_the_session(hub: Hub, pub: Publisher) -> None:
    last = await play_session(hub, pub)
    async with serving(hub) as (server, url), session(url) as s:
        await settle(server, last)
        tools = {t.name: t for t in (await s.list_tools()).tools}
        assert set(tools) == STATE_TOOLS | SPEAK_TOOLS
        for t in tools.values():
            assert t.description and t.inputSchema["type"] == "object" and t.outputSchema, t.name
            # Home Assistant 2025.4 turns input schemas into voluptuous and refuses the whole server on an anyOf
            assert "anyOf" not in json.dumps(t.inputSchema), t.inputSchema
        assert tools["where_is"].inputSchema["required"] == ["person"]
        assert tools["ask"].outputSchema["properties"]["status"]["enum"] == [
            "answered", "someone_else", "no_answer", "not_home"
        ]  # fmt: skip

        home = await call(s, "who_is_home")
        assert {(p["person"], p["room"]) for p in home["people"]} == set(WHERE.items())
        assert home["unknown"] == {"living_room": 1}
        assert home["total"] == 4
        for person, room in WHERE.items():
            where = await call(s, "where_is", person=person)
            assert (where["home"], where["room"]) == (True, room)
        kitchen = await call(s, "room_occupants", room="kitchen")
        assert (kitchen["people"], kitchen["unknown"], kitchen["count"]) == (["joe", "rob"], 0, 2)
        living = await call(s, "room_occupants", room="living_room")
        assert (living["people"], living["unknown"], living["count"]) == (["sara"], 1, 2)

        # sara's last utterance was in the kitchen ("add milk to the shopping list"): heard there last
        seen = await call(s, "last_seen", person="sara")
        assert (seen["room"], seen["last_seen_room"], seen["seen_by"]) == ("living_room", "kitchen", "voice")
        assert 0 <= seen["seconds_ago"] < 30

        said = await call(s, "recent_transcripts", room="kitchen")
        want = [(p, c) for r, p, _, c in SAMPLE_UTTERANCES if r == "kitchen"]
        assert [(u["speaker"], u["text"]) for u in said["transcripts"]] == want
        joe = await call(s, "recent_transcripts", person="joe", limit=2)
        assert [u["text"] for u in joe["transcripts"]] == [c for _, p, _, c in SAMPLE_UTTERANCES if p == "joe"][-2:]
        assert (await call(s, "recent_transcripts", since=0.001))["transcripts"] == []
        assert len((await call(s, "recent_transcripts", since=600))["transcripts"]) == len(SAMPLE_UTTERANCES)


async def test_output_schemas_are_draft_7_and_still_check_the_results(hub: Hub, pub: Publisher) -> None:
    """The SDK's client validates every result against its tool's output schema; declared draft 7 (checking
    the schema itself costs a fraction of 2020-12's), they are valid draft-7 schemas that still catch a wrong
    value, nested ones (``$defs``) included."""
    import jsonschema

    from sensorium.bridges.mcp.server import OUTPUT_SCHEMA_DIALECT

    await play_session(hub, pub)
    async with serving(hub) as (_server, url), session(url) as s:
        tools = {t.name: t for t in (await s.list_tools()).tools}
        assert OUTPUT_SCHEMA_DIALECT == "http://json-schema.org/draft-07/schema#"
        for tool in tools.values():
            assert tool.outputSchema is not None and tool.outputSchema["$schema"] == OUTPUT_SCHEMA_DIALECT, tool.name
            jsonschema.Draft7Validator.check_schema(tool.outputSchema)
            assert "$schema" not in tool.inputSchema  # Home Assistant converts input schemas: left as they were
        home = await call(s, "who_is_home")  # the SDK's client validated it already
        schema = tools["who_is_home"].outputSchema
        jsonschema.validate(home, schema)
        wrong = {**home, "people": [{**home["people"][0], "room": 5}]}
        with pytest.raises(jsonschema.ValidationError, match="5 is not of type"):
            jsonschema.validate(wrong, schema)
        with pytest.raises(jsonschema.ValidationError, match="'total' is a required property"):
            jsonschema.validate({k: v for k, v in home.items() if k != "total"}, schema)


async def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(hub: Hub, pub: Publisher) -> None:
    await play_session(hub, pub)
    async with serving(hub) as (_server, url), session(url) as s:
        assert "unknown person 'zed'" in await refused(s, "where_is", person="zed")
        assert "enrolled: joe, rob, sara" in await refused(s, "last_seen", person="zed")
        assert "unknown room 'garage'" in await refused(s, "room_occupants", room="garage")
        assert "rooms: kitchen, living_room" in await refused(s, "stop", room="garage")
        assert "text is empty" in await refused(s, "say", room="kitchen", text="   ")
        assert "either room or person" in await refused(s, "say", text="hello")
        assert "either room or person" in await refused(s, "say", text="hello", room="kitchen", person="joe")
        assert "person" in await refused(s, "where_is", person=5)  # wrong type: a validation error naming it
        assert "person" in await refused(s, "where_is")  # missing argument
        assert "limit" in await refused(s, "recent_transcripts", limit="many")
        assert "timeout" in await refused(s, "ask", person="joe", question="dinner?", timeout=-1)
        assert "Unknown tool" in await refused(s, "open_the_door")
        with pytest.raises(Exception, match="unknown room 'garage'"):
            await s.read_resource(AnyUrl("sensorium://room/garage"))
        # still serving, and the same session still works
        assert (await call(s, "where_is", person="joe"))["room"] == "kitchen"


async def test_speak_tools_reach_the_bus_and_every_call_is_an_event(hub: Hub, pub: Publisher) -> None:
    await play_session(hub, pub)
    sub = Subscriber(hub.endpoints, ["say/", "stop_playback/"])
    async with serving(hub) as (_server, url), session(url) as s:
        await asyncio.sleep(0.2)
        said = await call(s, "say", person="sara", text="Dinner is ready.")
        assert said["room"] == "living_room"
        async with asyncio.timeout(5):
            msg = await sub.recv()
        assert isinstance(msg, Say)
        assert (msg.room, msg.text, msg.person, msg.answer_id) == ("living_room", "Dinner is ready.", "sara",
                                                                    said["answer_id"])  # fmt: skip
        await call(s, "stop", room="living_room")
        async with asyncio.timeout(5):
            msg = await sub.recv()
        assert isinstance(msg, StopPlayback) and msg.room == "living_room"
        await refused(s, "where_is", person="zed")
    sub.socket.close(0)
    async with Client(hub.endpoints, clock=hub.clock) as c:
        logged: list[McpCall] = []
        async with asyncio.timeout(10):
            async for ev in c.events(["mcp_call"], since=0):
                assert isinstance(ev, McpCall)
                logged.append(ev)
                if len(logged) == 3:
                    break
    assert [(e.tool, e.ok) for e in logged] == [("say", True), ("stop", True), ("where_is", False)]
    assert json.loads(logged[0].arguments) == {"person": "sara", "text": "Dinner is ready."}
    assert logged[0].client.startswith("mcp ") and "(http 127.0.0.1)" in logged[0].client
    assert "unknown person 'zed'" in logged[2].error


async def test_read_only_server_offers_no_speaking(hub: Hub, pub: Publisher) -> None:
    async with serving(hub, speak=False) as (_server, url), session(url) as s:
        assert {t.name for t in (await s.list_tools()).tools} == STATE_TOOLS
        assert "Unknown tool" in await refused(s, "say", room="kitchen", text="hello")


# -------------------------------------------------------------------------- resources


async def test_resources_and_a_subscription_to_a_person(hub: Hub, pub: Publisher) -> None:
    await play_session(hub, pub)
    updates: asyncio.Queue[str] = asyncio.Queue()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ResourceUpdatedNotification
        ):
            await updates.put(str(message.root.params.uri))

    async with serving(hub) as (server, url), session(url, message_handler=on_message) as s:
        init_caps = server.mcp._mcp_server.get_capabilities(
            __import__("mcp.server.lowlevel", fromlist=["NotificationOptions"]).NotificationOptions(), {}
        )
        assert init_caps.resources is not None and init_caps.resources.subscribe
        listed = {str(r.uri) for r in (await s.list_resources()).resources}
        assert listed == {"sensorium://room/kitchen", "sensorium://room/living_room"}
        templates = {t.uriTemplate for t in (await s.list_resource_templates()).resourceTemplates}
        assert templates == {"sensorium://room/{room}", "sensorium://person/{name}"}
        joe = json.loads((await s.read_resource(AnyUrl("sensorium://person/joe"))).contents[0].text)  # type: ignore[union-attr]
        assert (joe["home"], joe["room"]) == (True, "kitchen")
        kitchen = json.loads((await s.read_resource(AnyUrl("sensorium://room/kitchen"))).contents[0].text)  # type: ignore[union-attr]
        assert kitchen == {"room": "kitchen", "people": ["joe", "rob"], "unknown": 0, "count": 2}

        await s.subscribe_resource(AnyUrl("sensorium://person/joe"))
        await s.subscribe_resource(AnyUrl("sensorium://room/living_room"))
        await pub.publish(presence(hub, "rob", "kitchen", state="present"))  # no change of room: no update
        await asyncio.sleep(0.5)
        assert updates.empty()
        await pub.publish(presence(hub, "joe", "kitchen", state="left"))
        await pub.publish(presence(hub, "joe", "living_room", unknown=1))
        got: set[str] = set()
        async with asyncio.timeout(10):
            while got != {"sensorium://person/joe", "sensorium://room/living_room"}:
                got.add(await updates.get())
        joe = json.loads((await s.read_resource(AnyUrl("sensorium://person/joe"))).contents[0].text)  # type: ignore[union-attr]
        assert joe["room"] == "living_room"
        living = json.loads((await s.read_resource(AnyUrl("sensorium://room/living_room"))).contents[0].text)  # type: ignore[union-attr]
        assert living["people"] == ["joe", "sara"]


# ------------------------------------------------------------------------------ access


def test_access_policy() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert is_loopback(host)
        check_bind(host, None)
    for host in ("0.0.0.0", "192.168.1.5", "::", "jarvis.local"):
        assert not is_loopback(host)
        with pytest.raises(AccessError, match="set token_file"):
            check_bind(host, None)
        check_bind(host, TOKEN)


def test_token_file(tmp_path: Path) -> None:
    f = tmp_path / "token"
    with pytest.raises(AccessError, match=f"token_file {f}"):
        read_token(str(f))
    f.write_text("short\n")
    with pytest.raises(AccessError, match="at least 16"):
        read_token(str(f))
    f.write_text(f"{TOKEN}\n# comment\n")
    assert read_token(str(f)) == TOKEN


async def test_a_token_is_required_when_set(hub: Hub, pub: Publisher) -> None:
    await play_session(hub, pub)
    async with serving(hub, token=TOKEN) as (_server, url):
        async with httpx.AsyncClient() as h:
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            r = await h.post(f"{url}/mcp", json=body)
            assert r.status_code == 401 and "missing bearer token" in r.json()["error_description"]
            r = await h.post(f"{url}/mcp", json=body, headers={"Authorization": "Bearer nope"})
            assert r.status_code == 401 and r.json()["error_description"] == "wrong bearer token"
            r = await h.get(f"{url}/sse", headers={"Authorization": "Bearer nope"})
            assert r.status_code == 401
        with pytest.raises(Exception):  # noqa: B017 - the SDK's client gives up on a 401 (an ExceptionGroup)
            async with session(url, headers={"Authorization": "Bearer wrong-token"}):
                pass
        async with session(url, headers={"Authorization": f"Bearer {TOKEN}"}) as s:
            assert (await call(s, "where_is", person="rob"))["room"] == "kitchen"


# --------------------------------------------------------------------------- transports


async def test_sse_transport(hub: Hub, pub: Publisher) -> None:
    await play_session(hub, pub)
    async with (
        serving(hub) as (_server, url),
        sse_client(f"{url}/sse") as (read, write),
        ClientSession(read, write) as s,
    ):
        await s.initialize()
        assert {t.name for t in (await s.list_tools()).tools} == STATE_TOOLS | SPEAK_TOOLS
        assert (await call(s, "where_is", person="sara"))["room"] == "living_room"


async def test_a_client_closing_its_session_is_not_an_error(
    hub: Hub, pub: Publisher, caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK's client ends its streamable-HTTP session (DELETE) on exit; the SDK server logged that as
    ERROR "Error in standalone SSE writer" (ClosedResourceError). A real error there is still logged."""
    await play_session(hub, pub)
    async with serving(hub) as (_server, url):
        for _ in range(2):
            async with session(url) as s:
                assert (await call(s, "where_is", person="joe"))["room"] == "kitchen"
        async with sse_client(f"{url}/sse") as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            assert (await call(s, "where_is", person="sara"))["room"] == "living_room"
        await asyncio.sleep(0.3)  # the server has ended those sessions
        async with session(url) as s:  # and keeps serving
            assert (await call(s, "who_is_home"))["total"] == 4
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [], [(r.name, r.getMessage(), r.exc_info) for r in errors]

    sdk = logging.getLogger("mcp.server.streamable_http")
    for exc in (anyio.ClosedResourceError(), RuntimeError("the event could not be encoded")):
        try:
            raise exc
        except Exception:
            sdk.exception("Error in standalone SSE writer")
    kept = [r for r in caplog.records if r.name == sdk.name and r.levelno == logging.ERROR]
    assert [type(r.exc_info[1]) for r in kept if r.exc_info] == [RuntimeError]


async def test_http_connections_send_without_waiting_for_acks() -> None:
    """The server's socket gives its connections TCP_NODELAY (asyncio sets it only for IPPROTO_TCP sockets):
    without it a response written in two pieces waits for the client's delayed ACK (~40 ms a call)."""
    import socket

    from sensorium.bridges.mcp.server import listen_socket

    async def nodelay(sock: socket.socket) -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_client(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            accepted.set_result(w.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            w.close()

        server = await asyncio.start_server(on_client, sock=sock)
        async with server:
            _r, w = await asyncio.open_connection(*sock.getsockname()[:2])
            got = await asyncio.wait_for(accepted, 5)
            w.close()
        return got

    assert await nodelay(listen_socket("127.0.0.1", free_port())) != 0
    plain = socket.socket(socket.AF_INET)  # what the server bound before: its connections waited for ACKs
    plain.bind(("127.0.0.1", 0))
    assert await nodelay(plain) == 0


def _deploy(tmp_path: Path, hub_address: str) -> Path:
    path = tmp_path / "deploy.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[hub]\naddress = "{hub_address}"\nheartbeat = "100ms"\n'
        '[rooms.kitchen]\n[rooms.living_room]\n'
        '[edges.kitchen-pi]\nroom = "kitchen"\n[edges.kitchen-pi.microphone]\n'
        '[edges.living-pi]\nroom = "living_room"\n[edges.living-pi.microphone]\n'
        '[mcp]\nspeak = true\n'
    )  # fmt: skip
    return path


async def test_stdio_transport_from_the_cli(hub: Hub, pub: Publisher, tmp_path: Path) -> None:
    await play_session(hub, pub)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "sensorium", "mcp", "--config", str(_deploy(tmp_path, hub.config.address)), "--stdio"],
        cwd=str(ROOT),
        env={**os.environ},
    )
    with open(tmp_path / "stderr.txt", "w") as err:
        async with stdio_client(params, errlog=err) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            assert {t.name for t in (await s.list_tools()).tools} == STATE_TOOLS | SPEAK_TOOLS
            home = await call(s, "who_is_home")
            assert {(p["person"], p["room"]) for p in home["people"]} == set(WHERE.items())
            said = await call(s, "recent_transcripts", person="rob")
            assert [u["text"] for u in said["transcripts"]] == [c for _, p, _, c in SAMPLE_UTTERANCES if p == "rob"]
            assert "unknown room 'attic'" in await refused(s, "room_occupants", room="attic")
    assert "serving stdio" in (tmp_path / "stderr.txt").read_text()


def test_cli_refuses_to_serve_off_loopback_without_a_token(tmp_path: Path, hub_address: str) -> None:
    path = _deploy(tmp_path, hub_address)
    r = subprocess.run(
        [sys.executable, "-m", "sensorium", "mcp", "--config", str(path), "--host", "0.0.0.0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert "host = '0.0.0.0' is reachable from other machines: set token_file" in r.stderr


# ------------------------------------------------------------------------------ the example agent


class _FakeChat:
    """An OpenAI-compatible chat endpoint that calls where_is for sara, then answers from the tool's result."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                tool_msgs = [m for m in body["messages"] if m["role"] == "tool"]
                if not tool_msgs:
                    call = {"id": "c1", "type": "function",
                            "function": {"name": "where_is", "arguments": json.dumps({"person": "sara"})}}  # fmt: skip
                    message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
                else:
                    where = json.loads(tool_msgs[-1]["content"])
                    message = {"role": "assistant", "content": f"Sara is in the {where['room'].replace('_', ' ')}."}
                data = json.dumps({"choices": [{"index": 0, "message": message}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_example_agent_answers_through_the_mcp_tools(hub: Hub, pub: Publisher) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("mcp_agent", ROOT / "examples" / "mcp_agent.py")
    agent = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(agent)  # type: ignore[union-attr]
    await play_session(hub, pub)
    chat = _FakeChat()
    try:
        async with serving(hub) as (server, url):
            answer = await agent.run("Where is Sara?", url=f"{url}/mcp", model="test", base_url=chat.url)
            assert answer == "Sara is in the living room."
            offered = {t["function"]["name"] for t in chat.requests[0]["tools"]}
            assert offered == STATE_TOOLS | SPEAK_TOOLS
            assert chat.requests[0]["tools"][0]["function"]["parameters"]["type"] == "object"
            assert [tool for tool, _ in server.timings] == ["where_is"]
    finally:
        chat.close()


async def test_one_question_at_a_time_per_room(hub: Hub, pub: Publisher) -> None:
    """Nothing plays the question here (no tts stage): the first ask ends with no_answer at its timeout,
    and while it waits, a second question in the same room is refused rather than stealing its answer."""
    await play_session(hub, pub)
    async with serving(hub) as (_server, url), session(url) as s1, session(url) as s2:
        first = asyncio.create_task(s1.call_tool("ask", {"person": "joe", "question": "Pasta?", "timeout": 3}))
        await asyncio.sleep(0.5)
        assert "kitchen is already waiting" in await refused(s2, "ask", person="rob", question="Tea?")
        r = await first
        assert r.structuredContent is not None
        assert (r.structuredContent["status"], r.structuredContent["room"]) == ("no_answer", "kitchen")
        assert 2.9 < r.structuredContent["seconds"] < 6
        answer = await call(s2, "ask", person="sara", question="Tea?", timeout=1)  # another room: its own question
        assert answer["status"] == "no_answer" and answer["room"] == "living_room"


async def test_cli_serves_http_and_stops_cleanly_on_sigterm(hub: Hub, pub: Publisher, tmp_path: Path) -> None:
    import signal

    await play_session(hub, pub)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sensorium", "mcp", "--config", str(_deploy(tmp_path, hub.config.address)),
        "--port", str(port), cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            banner = (await proc.stdout.readline()).decode()
        assert f"serving http://127.0.0.1:{port}/mcp (streamable HTTP) and http://127.0.0.1:{port}/sse" in banner
        async with session(f"http://127.0.0.1:{port}") as s:
            assert (await call(s, "where_is", person="joe"))["room"] == "kitchen"
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_cli_names_a_port_in_use_and_exits_1(tmp_path: Path, hub_address: str) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "sensorium", "mcp", "--config", str(_deploy(tmp_path, hub_address)),
             "--port", str(port)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"sensorium mcp: cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr


def test_the_deployments_publish_policy_lets_the_mcp_server_log_agents_calls() -> None:
    """A hub started from a deployment with edges and workers refuses events of unknown senders: the MCP
    server's ``mcp_call`` audit events (under its configured or default name) must still be logged."""
    from sensorium.deployment import deployment_from_dict, publish_policy
    from sensorium.pipeline.messages import McpCall, WakeDetected

    base = {
        "rooms": {"kitchen": {}},
        "edges": {"kitchen-pi": {"room": "kitchen", "microphone": {}}},
        "workers": {"cpu0": {"stages": ["wake"]}},
    }
    policy = publish_policy(deployment_from_dict(base, "<test>"))
    assert policy is not None
    assert policy.problem(McpCall(source="sensorium-mcp", tool="who_is_home")) is None
    assert policy.problem(McpCall(source="intruder", tool="who_is_home")) is not None
    assert policy.problem(WakeDetected(room="kitchen", source="sensorium-mcp", word="x")) is not None
    named = publish_policy(deployment_from_dict({**base, "mcp": {"name": "agents"}}, "<test>"))
    assert named is not None and named.problem(McpCall(source="agents", tool="say")) is None
