"""Hostile clients against a real hub: how much memory can any peer on the bus make it hold?

Real processes on ipc, from a generated deployment file: ``sensorium hub``, ``sensorium worker`` running
the ``wake`` stage (openWakeWord) and ``sensorium edge`` playing a looped "hey jarvis" (Piper) as its
microphone. The hub's RSS is sampled every 50 ms through four attacks, one after the other, each from this
process over the hub's own sockets:

1. ``events``: 10,000 of the largest events the hub logs (``error`` events of ~59 KB of JSON, as the worker,
   which may publish them) published on the bus;
2. ``unread``: 64 control connections sending events requests (1,000 each) and never reading a reply;
3. ``names``: 1,000 connections registering 1,000 node names and heartbeating;
4. ``frame``: one 256 MB frame on an audio topic.

For each: the hub's RSS before and at its peak, the worker's peak, and the wake words for "hey jarvis" the
bus carried while the attack ran (one every ~2.2 s when all is well: a real wake word still answered). The
goal is a hub under 300 MB through all of them. Results: ``benchmarks/results/hostile.json``.

  python -m benchmarks.hostile [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.chaos import _wav, deployment
from benchmarks.outfile import add_out
from benchmarks.processes import SENSORIUM, Processes

RESULTS = Path(__file__).resolve().parent / "results" / "hostile.json"
GOAL_MB = 300


async def _attack_events(address: str, n: int) -> None:
    from sensorium.pipeline.bus import Endpoints, Publisher
    from sensorium.pipeline.messages import InputError

    pub = Publisher(Endpoints.from_address(address), hwm=100_000)
    await asyncio.sleep(0.3)
    text = "word " * 11_700  # ~59 KB of JSON, under the log's 60 KiB per event
    for i in range(n):  # as the worker, which may publish error events: the hub logs every one it gets
        await pub.publish(
            InputError(room="kitchen", source="cpu0", stage="wake", input_topic="audio/", reason=text, seq=i + 1)
        )
        if i % 50 == 0:
            await asyncio.sleep(0.005)  # the bus's high-water mark is 10,000 messages; keep them all coming
    await asyncio.sleep(1.0)
    pub.close()


async def _attack_unread(address: str, conns: int, requests: int) -> None:
    import zmq

    from sensorium.pipeline.bus import Endpoints, context
    from sensorium.pipeline.codec import encode
    from sensorium.pipeline.messages import EventsRequest

    ep = Endpoints.from_address(address)
    socks = []
    for _ in range(conns):
        s = context().socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.RCVHWM, 1)
        s.connect(ep.control)
        socks.append(s)
    await asyncio.sleep(0.3)
    for k in range(requests):
        for s in socks:
            await s.send_multipart(encode(EventsRequest(since=k, request_id=k + 1)))
        if k % 20 == 0:
            await asyncio.sleep(0)
    await asyncio.sleep(3.0)  # the hub works through what is queued
    for s in socks:
        s.close(0)


async def _attack_names(address: str, n: int, seconds: float) -> None:
    import zmq

    from sensorium.pipeline.bus import Endpoints, context
    from sensorium.pipeline.codec import encode
    from sensorium.pipeline.messages import Heartbeat, Register

    ep = Endpoints.from_address(address)
    socks = []
    for i in range(n):
        s = context().socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVHWM, 4)
        s.connect(ep.control)
        socks.append((f"squatter-{i}", s))
    await asyncio.sleep(0.3)
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        for name, s in socks:
            await s.send_multipart(encode(Register(node=name, role="edge", room="kitchen")))
            await s.send_multipart(encode(Heartbeat(node=name, sent=time.monotonic())))
        await asyncio.sleep(0.5)
    for _, s in socks:
        s.close(0)


async def _attack_frame(address: str, size: int) -> None:
    import zmq

    from sensorium.pipeline.bus import Endpoints, context

    ep = Endpoints.from_address(address)
    s = context().socket(zmq.PUB)
    s.setsockopt(zmq.LINGER, 2000)
    s.connect(ep.publish)
    await asyncio.sleep(0.3)
    await s.send_multipart([b"audio/kitchen/kitchen-pi", b"\x01", bytes(size)])
    await asyncio.sleep(4.0)
    s.close()


async def _log_span(address: str) -> tuple[int, int]:
    """(first, last) sequence number the hub's log holds now."""
    from sensorium.pipeline.client import Client
    from sensorium.pipeline.messages import EventsReply, EventsRequest

    async with Client(address, name=f"hostile-probe-{os.getpid()}") as c:
        reply = await c.link.request(EventsRequest(since=2**62), 10.0)
    assert isinstance(reply, EventsReply)
    return reply.first_seq, reply.last_seq


async def _bench(smoke: bool) -> dict[str, Any]:
    import psutil

    from sensorium.pipeline.bus import Endpoints, Subscriber
    from sensorium.pipeline.messages import WakeDetected

    folder = Path(tempfile.mkdtemp(prefix="hostile-"))
    cfg, address = deployment(folder, 10000)
    wav = _wav(folder)
    procs = Processes(
        folder / "logs",
        {
            "hub": [*SENSORIUM, "hub", "--config", str(cfg)],
            "worker": [*SENSORIUM, "worker", "--config", str(cfg), "--name", "cpu0"],
            "edge": [*SENSORIUM, "edge", "--config", str(cfg), "--name", "kitchen-pi", "--wav", str(wav), "--loop"],
        },
    )
    for name in ("hub", "worker", "edge"):
        procs.start(name)
    hub_p, worker_p = psutil.Process(procs.procs["hub"].pid), psutil.Process(procs.procs["worker"].pid)
    sub = Subscriber(Endpoints.from_address(address), ["wake/"])
    wakes: list[float] = []

    async def listen() -> None:
        while True:
            msg = await sub.recv()
            if isinstance(msg, WakeDetected) and msg.word == "hey_jarvis":
                wakes.append(time.monotonic())

    listener = asyncio.create_task(listen())
    scale = 0.05 if smoke else 1.0
    frame = (32 << 20) if smoke else (256 << 20)
    attacks: list[tuple[str, str, Callable[[], Awaitable[None]]]] = [
        ("events", f"{int(10000 * scale)} events of ~59 KB", lambda: _attack_events(address, int(10000 * scale))),
        (
            "unread",
            f"64 connections x {int(1000 * scale)} events requests, never read",
            lambda: _attack_unread(address, 64, int(1000 * scale)),
        ),
        ("names", f"{int(1000 * scale)} names registered", lambda: _attack_names(address, int(1000 * scale), 6.0)),
        (
            "frame",
            f"one {frame >> 20} MB frame on an audio topic",
            lambda: _attack_frame(address, frame),
        ),
    ]
    rows: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 180
        while not wakes:  # the worker has loaded its model and the edge is heard
            if time.monotonic() > deadline or procs.dead():
                raise RuntimeError("no wake word before the attacks:\n" + procs.logs())
            await asyncio.sleep(0.2)
        await asyncio.sleep(3.0)
        for name, what, attack in attacks:
            rss0 = hub_p.memory_info().rss
            wrss0 = worker_p.memory_info().rss
            peak, wpeak = rss0, wrss0
            t0 = time.monotonic()
            task = asyncio.create_task(attack())
            while not task.done():
                await asyncio.sleep(0.05)
                peak = max(peak, hub_p.memory_info().rss)
                wpeak = max(wpeak, worker_p.memory_info().rss)
            await task
            t1 = time.monotonic()
            for _ in range(20):  # and for a second after
                await asyncio.sleep(0.05)
                peak = max(peak, hub_p.memory_info().rss)
            heard = [w for w in wakes if t0 <= w <= t1 + 1.0]
            held = await _log_span(address)
            row = {
                "attack": name,
                "what": what,
                "seconds": round(t1 - t0, 1),
                "hub_rss_before_mb": round(rss0 / 2**20, 1),
                "hub_rss_peak_mb": round(peak / 2**20, 1),
                "hub_rss_after_mb": round(hub_p.memory_info().rss / 2**20, 1),
                "worker_rss_growth_mb": round((wpeak - wrss0) / 2**20, 1),
                "wake_words_during": len(heard),
                "log_last_seq": held[1],
                "log_events_held": held[1] - held[0] + 1,
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            if procs.dead():
                raise RuntimeError(f"a process died during {name}: {procs.dead()}\n{procs.logs()}")
    finally:
        listener.cancel()
        sub.close()
        procs.stop()
    peak_all = max(r["hub_rss_peak_mb"] for r in rows)
    return {
        "smoke": smoke,
        "attacks": rows,
        "hub_rss_ceiling_mb": peak_all,
        "goal_mb": GOAL_MB,
        "goal_met": peak_all < GOAL_MB and all(r["wake_words_during"] > 0 for r in rows),
    }


def run(quick: bool = False, *, smoke: bool = False, out: Path = RESULTS) -> dict[str, Any]:
    """Run the attacks (``smoke``: 5 % of each and a 32 MB frame, for CI); results also written to ``out``."""
    result = asyncio.run(_bench(smoke))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(render(result))
    return result


def render(r: dict[str, Any]) -> str:
    """Markdown lines for the summary."""
    lines = [
        f"hub RSS ceiling {r['hub_rss_ceiling_mb']:.0f} MB (goal < {r['goal_mb']} MB, a wake word heard during "
        f"each attack: {'met' if r['goal_met'] else 'NOT met'})"
    ]
    for a in r["attacks"]:
        lines.append(
            f"{a['attack']:>7}: {a['what']}: hub {a['hub_rss_before_mb']:.0f} -> peak {a['hub_rss_peak_mb']:.0f} MB "
            f"(after {a['hub_rss_after_mb']:.0f}), worker +{a['worker_rss_growth_mb']:.0f} MB, "
            f"{a['wake_words_during']} wake words in {a['seconds']:.0f} s (load {a['load_avg_1m']})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="5 %% of each attack: does it still run (CI)")
    add_out(ap, RESULTS)
    a = ap.parse_args()
    run(smoke=a.smoke, out=a.out)
