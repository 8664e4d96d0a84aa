"""The MCP server: tool-call latency while the hub carries a full session, and ``ask`` question → answer.

* **state tools**: ``who_is_home``, ``where_is``, ``room_occupants``, ``last_seen`` and
  ``recent_transcripts`` called one after another over three transports: the MCP SDK's own client over
  streamable HTTP and over SSE, Home Assistant 2025.4.4's own MCP client (``mcp`` 1.5.0 over SSE, run in
  ``.venv-homeassistant`` by ``benchmarks/peers/mcp_ha_client.py``), and plain JSON-RPC posts over streamable
  HTTP (a client that does not re-check results against the tool's schema), while a load generator gives the
  hub a two-room home's traffic: a microphone stream per room in real time (12.5 chunks/s), a camera's
  detections at 6.25 fps per room, presence confirmations every second, and a voice command with its
  speaker every 3 s. p50/p95 of the client's wall time per call (goal < 20 ms).
  Side by side, one server each on the same hub at the same time: **before**, the server as it was served
  until now (uvicorn on a socket bound as ``socket.socket(AF_INET)``: protocol 0, so asyncio never set
  ``TCP_NODELAY`` on its connections and a response written in two pieces waited for the client's delayed
  ACK; output schemas without ``$schema``, which the SDK's client checks as 2020-12 on every call) and
  **after**, ``SensoriumMcp.serve_http`` (``bridges.mcp.server.listen_socket``; draft-7 output schemas). Beside them,
  today's way for an agent to ask who is home: ``pipeline.client.Client.snapshot()`` (one hub round trip).
* **ask**: the real pipeline (tts, stt, speaker ID on the CPU; edges playing the question into WAV
  files) and a synthesized answer spoken into the room's microphone stream after the question has
  played (``evaluation.mcp_house``): seconds from the call to the answer, and the part after the
  answer's speech ended.

Run with ``python -m benchmarks --only mcp``; results in ``benchmarks/results/mcp.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ROOMS = ["kitchen", "living_room"]
WHERE = {"joe": "kitchen", "rob": "kitchen", "sara": "living_room"}
TRANSPORTS = ("streamable_http", "sse", "ha_sse", "raw_json_rpc")
HA_PYTHON = ROOT / ".venv-homeassistant" / "bin" / "python"
"""Home Assistant 2025.4.4's venv (``scripts/setup.sh``): its MCP client is ``mcp`` 1.5.0."""
SERVERS = ("before", "after")
"""before: connections without TCP_NODELAY (as served until now); after: ``SensoriumMcp.serve_http``."""


def _pcts(xs: Sequence[float]) -> dict[str, float | int | None]:
    from sensorium.pipeline.metrics import summary

    return summary(xs, scale=1000, digits=2, suffix="_ms", extra=("max",))


async def _load(hub: Any, stop: asyncio.Event) -> dict[str, int]:
    """A two-room home's traffic on the hub's bus until ``stop``."""
    from sensorium.pipeline.bus import Publisher
    from sensorium.pipeline.messages import AudioChunk, Detections, Presence, SpeakerIdentified, Transcript

    pub = Publisher(hub.endpoints)
    sent = {"audio": 0, "detections": 0, "presence": 0, "commands": 0}
    silence = np.zeros(1280, "<i2").tobytes()
    tick = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        while not stop.is_set():
            now = hub.clock.now()
            for room in ROOMS:
                await pub.publish(AudioChunk(time=now, room=room, source=f"{room}-pi", data=silence))
                sent["audio"] += 1
                if tick % 2 == 0:  # 12.5 chunks/s → 6.25 frames/s
                    await pub.publish(Detections(time=now, room=room, source="detect", camera=f"{room}-cam", persons=2))
                    sent["detections"] += 1
            if tick % 12 == 0:
                for person, room in WHERE.items():
                    unknown = 1 if room == "living_room" else 0
                    await pub.publish(
                        Presence(time=now, room=room, source="presence", person=person, state="present",
                                 unknown=unknown, confidence=0.9)
                    )  # fmt: skip
                    sent["presence"] += 1
            if tick % 38 == 0:
                uid = f"u{tick}"
                person = list(WHERE)[tick // 38 % 3]
                room = WHERE[person]
                await pub.publish(SpeakerIdentified(time=now, room=room, source="speaker", utterance_id=uid,
                                                    person=person, score=0.8))  # fmt: skip
                await pub.publish(Transcript(time=now, room=room, source="stt", utterance_id=uid, final=True,
                                             text="turn on the lights", speaker=person))  # fmt: skip
                sent["commands"] += 1
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * 0.08 - loop.time()))
    finally:
        pub.close()
    return sent


async def _serve_before(server: Any, port: int, started: asyncio.Event) -> None:
    """The server as it was served until now: uvicorn on a socket made as ``socket.socket(AF_INET)`` (protocol 0:
    asyncio leaves ``TCP_NODELAY`` off on its connections)."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    web = uvicorn.Server(uvicorn.Config(server.http_app(), log_level="warning", lifespan="on"))
    task = asyncio.create_task(web.serve(sockets=[sock]))
    try:
        while not web.started:
            await asyncio.sleep(0.02)
        started.set()
        await asyncio.shield(task)
    finally:
        web.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            async with asyncio.timeout(5.0):
                await asyncio.shield(task)
        task.cancel()
        sock.close()


@contextlib.asynccontextmanager
async def _server(hub: Any, port: int, before: bool) -> AsyncIterator[Any]:
    from sensorium.bridges.mcp.server import SensoriumMcp
    from sensorium.pipeline.config import McpConfig

    config = McpConfig(port=port, name="mcp-before" if before else "mcp-after")  # two hub clients, two names
    server = SensoriumMcp(config, ROOMS, hub.endpoints, people=lambda: list(WHERE), heartbeat=0.25, clock=hub.clock)
    if before:  # the tools' output schemas as listed until now: without "$schema" (clients check them as 2020-12)
        from mcp.server.fastmcp import FastMCP

        async def tools_as_before() -> list[Any]:
            return await FastMCP.list_tools(server.mcp)

        server.mcp._mcp_server.list_tools()(tools_as_before)
    async with server.connected():
        started = asyncio.Event()
        serve = _serve_before(server, port, started) if before else server.serve_http(config.host, port, started)
        task = asyncio.create_task(serve)
        await started.wait()
        if not await server.wait_ready(10):
            raise RuntimeError(f"the MCP server on port {port} did not catch up with the hub in 10 s")
        try:
            yield server
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _sdk(url: str, transport: str, calls: dict[str, dict[str, Any]], n: int) -> dict[str, Any]:
    """The calls through the MCP SDK's own client."""
    from mcp import ClientSession
    from mcp.client.sse import sse_client
    from mcp.client.streamable_http import streamablehttp_client

    cm = streamablehttp_client(f"{url}/mcp") if transport == "streamable_http" else sse_client(f"{url}/sse")
    res: dict[str, Any] = {}
    async with cm as streams, ClientSession(streams[0], streams[1]) as s:
        await s.initialize()
        for tool, args in calls.items():
            times = []
            for i in range(n + 5):
                t0 = time.perf_counter()
                r = await s.call_tool(tool, args)
                dt = time.perf_counter() - t0
                assert not r.isError, r.content
                if i >= 5:  # warm-up
                    times.append(dt)
            res[tool] = _pcts(times)
    return res


async def _home_assistant(url: str, calls: dict[str, dict[str, Any]], n: int) -> dict[str, Any]:
    """The calls through Home Assistant 2025.4.4's MCP client (``mcp`` 1.5.0, SSE), in Home Assistant's venv."""
    import json

    proc = await asyncio.create_subprocess_exec(
        str(HA_PYTHON), str(ROOT / "benchmarks" / "peers" / "mcp_ha_client.py"),
        "--url", url, "--calls", json.dumps(calls), "-n", str(n),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"Home Assistant's MCP client failed (exit {proc.returncode}): {err.decode()[-2000:]}")
    return {tool: _pcts(times) for tool, times in json.loads(out).items()}


async def state_tools(n: int) -> dict[str, Any]:
    from sensorium.evaluation.ports import free_port
    from sensorium.pipeline.client import Client
    from sensorium.pipeline.config import HubConfig
    from sensorium.pipeline.hub import Hub

    calls = {
        "who_is_home": {},
        "where_is": {"person": "sara"},
        "room_occupants": {"room": "kitchen"},
        "last_seen": {"person": "joe"},
        "recent_transcripts": {"room": "kitchen", "limit": 10},
    }
    out: dict[str, Any] = {name: {} for name in SERVERS}
    with tempfile.TemporaryDirectory() as d:
        hub = Hub(HubConfig(address=f"ipc://{d}/hub", heartbeat=0.25, event_log=20000), state_dir=Path(d) / "state")
        await hub.start()
        stop = asyncio.Event()
        load = asyncio.create_task(_load(hub, stop))
        ports = {name: free_port() for name in SERVERS}
        try:
            await asyncio.sleep(2.0)  # the session is under way
            async with _server(hub, ports["before"], True), _server(hub, ports["after"], False) as server:
                for transport in TRANSPORTS:  # before and after one right after the other, under the same load
                    for name in SERVERS:
                        url = f"http://127.0.0.1:{ports[name]}"
                        if transport == "raw_json_rpc":
                            out[name][transport] = await _raw(f"{url}/mcp", calls, n)
                        elif transport == "ha_sse":
                            if HA_PYTHON.exists():
                                out[name][transport] = await _home_assistant(f"{url}/sse", calls, n)
                        else:
                            out[name][transport] = await _sdk(url, transport, calls, n)
                server_ms: dict[str, list[float]] = {}
                for tool, ms in server.timings:
                    server_ms.setdefault(tool, []).append(ms / 1000)
                out["in_server"] = {tool: _pcts(v) for tool, v in server_ms.items()}
                async with Client(hub.endpoints, clock=hub.clock) as c:
                    await c.wait_connected()
                    times = []
                    for i in range(n + 5):
                        t0 = time.perf_counter()
                        snap = await c.snapshot()
                        if i >= 5:
                            times.append(time.perf_counter() - t0)
                    assert {p.person for p in snap} >= set(WHERE)
                    out["baseline_client_snapshot"] = _pcts(times)
                out["calls_logged"] = server.calls
        finally:
            stop.set()
            sent = await load
            await hub.stop()
    out["load"] = {"per_second": {"audio_chunks": 25, "detections": 12.5, "presence": 3.75, "commands": 0.33},
                   "sent": sent}  # fmt: skip
    return out


async def _raw(url: str, calls: dict[str, dict[str, Any]], n: int) -> dict[str, Any]:
    """The same calls as plain JSON-RPC posts over streamable HTTP (a client that does not re-check the result
    against the tool's JSON schema, as the SDK's 1.x client does on every call)."""
    import httpx

    head = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=10) as h:
        init = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
        r = await h.post(url, headers=head, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init})
        r.raise_for_status()
        head["mcp-session-id"] = r.headers["mcp-session-id"]
        await h.post(url, headers=head, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        out: dict[str, Any] = {}
        rid = 1
        for tool, args in calls.items():
            times = []
            for i in range(n + 5):
                body = {
                    "jsonrpc": "2.0",
                    "id": rid,
                    "method": "tools/call",
                    "params": {"name": tool, "arguments": args},
                }
                rid += 1
                t0 = time.perf_counter()
                r = await h.post(url, headers=head, json=body)
                dt = time.perf_counter() - t0
                assert r.status_code == 200 and '"structuredContent"' in r.text, r.text[:300]
                if i >= 5:
                    times.append(dt)
            out[tool] = _pcts(times)
        await h.delete(url, headers=head)
    return out


async def ask(rounds: int) -> dict[str, Any]:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    from sensorium.evaluation.mcp_house import answer_after_the_question, house, prepare_voices

    results = []
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        (folder / "voices").mkdir()
        voices = prepare_voices(folder / "voices", ROOT / ".cache")
        speech_s = len(voices["joe"]) / 16000
        async with house(folder, voices["gallery"]) as (env, mic, url):
            async with (
                streamablehttp_client(url) as (read, write, _),
                ClientSession(read, write, read_timeout_seconds=timedelta(seconds=90)) as s,
            ):
                await s.initialize()
                for _ in range(rounds):
                    answering = asyncio.create_task(answer_after_the_question(env, mic, voices["joe"]))
                    t0 = time.perf_counter()
                    r = await s.call_tool("ask", {"person": "joe", "question": "Would you like pasta for dinner?"})
                    t1 = time.perf_counter()
                    spoke = await answering
                    got = r.structuredContent or {}
                    results.append({"status": got.get("status"), "speaker": got.get("speaker"),
                                    "answer": got.get("answer"), "seconds": round(t1 - t0, 3),
                                    "question_played_s": round(spoke - 0.4 - t0, 3),
                                    "after_answer_speech_s": round(t1 - (spoke + speech_s), 3)})  # fmt: skip
                    await asyncio.sleep(1.0)
    totals = [r["seconds"] for r in results]
    return {
        "rounds": results,
        "answer_speech_s": round(speech_s, 2),
        "question_to_answer_s_median": round(statistics.median(totals), 3),
        "question_played_s_median": round(statistics.median(r["question_played_s"] for r in results), 3),
        "after_answer_speech_s_median": round(statistics.median(r["after_answer_speech_s"] for r in results), 3),
        "correct": sum(r["status"] == "answered" and r["speaker"] == "joe" for r in results),
    }


async def _main(quick: bool) -> dict[str, Any]:
    return {
        "loadavg_before": os.getloadavg(),
        "state_tools": await state_tools(40 if quick else 200),
        "ask": await ask(1 if quick else 3),
        "loadavg_after": os.getloadavg(),
    }


def run(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(_main(quick))


def render(r: dict[str, Any]) -> str:
    st = r["state_tools"]
    names = {
        "streamable_http": "SDK client, streamable HTTP",
        "sse": "SDK client, SSE",
        "ha_sse": "Home Assistant's client (mcp 1.5.0), SSE",
        "raw_json_rpc": "JSON-RPC post",
    }
    head = " | ".join(f"{names[t]}: before → after" for t in TRANSPORTS)
    lines = [
        "p50 / p95 ms per call; before: as served until now (no TCP_NODELAY, 2020-12 output schemas), after: today's",
        f"| tool | {head} | in the server |",
        "|---|" + "---|" * (len(TRANSPORTS) + 1),
    ]
    for tool in st["after"]["streamable_http"]:
        cells = []
        for t in TRANSPORTS:
            if t not in st["after"]:  # no Home Assistant venv
                cells.append("(not run)")
                continue
            b, a = st["before"][t][tool], st["after"][t][tool]
            cells.append(f"{b['p50_ms']} / {b['p95_ms']} → {a['p50_ms']} / {a['p95_ms']}")
        srv = st["in_server"][tool]
        lines.append(f"| {tool} | {' | '.join(cells)} | {srv['p50_ms']} / {srv['p95_ms']} |")
    b = st["baseline_client_snapshot"]
    lines.append(f"| (today: Client.snapshot) | {b['p50_ms']} / {b['p95_ms']} |" + " |" * len(TRANSPORTS))
    lines.append(f"load average {r['loadavg_before'][0]:.1f} before, {r['loadavg_after'][0]:.1f} after")
    a = r["ask"]
    lines.append("")
    lines.append(
        f"ask question → answer: median {a['question_to_answer_s_median']} s over {len(a['rounds'])} rounds "
        f"({a['correct']} answered by the right person): question spoken and played {a['question_played_s_median']} s, "
        f"the answer {a['answer_speech_s']} s of speech (starting 0.4 s later), its result "
        f"{a['after_answer_speech_s_median']} s after the speech ended"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    import json

    print(json.dumps(run("--quick" in sys.argv), indent=2))
