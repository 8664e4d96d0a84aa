"""Bus benchmark: our bus (codec + hub proxy) against raw pyzmq PUB/SUB, side by side in one run.

Throughput: a publisher process sends N messages as fast as it can; the receiver counts what
arrives and when the last one came. Latency: one message in flight at a time, publisher and
subscriber in one process (one clock), so the number is the true one-way latency of a hop.
Ours goes PUB → hub XSUB/XPUB proxy (its own process, as in a deployment) → SUB, with the typed
header encoded and decoded; raw goes PUB → SUB directly with bytes. Both over ipc.

Events: ``wake`` events through a hub with its persistent log (its own process, a state folder on
this machine's disk), counted on the hub's events socket: events/s when a publisher floods it, and
the latency of one event (publish → numbered, fsynced, published as JSON) when one is in flight.
Every event is durable before it is published (a group commit: one fsync per batch).

Run: ``python -m benchmarks.bus [--quick]``; writes ``benchmarks/results/bus.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq
import zmq.asyncio

from benchmarks.outfile import add_out, checkpoint, write_results

SIZES = {"320 B": 320, "64 KiB": 64 * 1024}
RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent


def _pct(xs: list[float], p: float) -> float:
    from sensorium.pipeline.metrics import percentile

    return percentile(xs, p) or 0.0


# ------------------------------------------------------------------------------------ raw pyzmq


def _raw_sender(addr: str, size: int, n: int, ready: mp.Event, connect: bool = False) -> None:  # type: ignore[valid-type]
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUB)
    s.setsockopt(zmq.SNDHWM, 0)
    s.connect(addr) if connect else s.bind(addr)
    ready.wait()
    time.sleep(0.3)
    payload = os.urandom(size)
    for _ in range(n):
        s.send_multipart([b"audio/kitchen/pi", payload], copy=size < 65536)
    s.send_multipart([b"audio/kitchen/pi", b"END"])
    time.sleep(1.0)
    s.close(0)
    ctx.term()


def raw_throughput(tmp: str, size: int, n: int, via: tuple[str, str] | None = None) -> dict[str, float]:
    """Raw PUB → SUB; with ``via`` (hub publish, subscribe endpoints) through the hub's proxy."""
    addr = f"ipc://{tmp}/raw-thr"
    ready = mp.Event()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"audio/")
    proc = mp.Process(target=_raw_sender, args=(via[0] if via else addr, size, n, ready, via is not None))
    proc.start()
    sub.connect(via[1] if via else addr)
    ready.set()
    got = 0
    t0 = t_last = None
    while sub.poll(3000):  # the proxy drops at its high-water mark (PUB/SUB semantics): END may be lost
        frames = sub.recv_multipart()
        if frames[1] == b"END":
            break
        t_last = time.perf_counter()
        if t0 is None:
            t0 = t_last
        got += 1
    dt = (t_last or 0.0) - (t0 or 0.0)
    proc.join()
    sub.close(0)
    ctx.term()
    return {"msgs_per_s": got / dt if dt else 0.0, "received": got, "sent": n}


def raw_latency(tmp: str, size: int, n: int, via: tuple[str, str] | None = None) -> list[float]:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    sub = ctx.socket(zmq.SUB)
    if via:
        pub.connect(via[0])
    else:
        pub.bind(f"ipc://{tmp}/raw-lat")
    sub.setsockopt(zmq.SUBSCRIBE, b"audio/")
    sub.connect(via[1] if via else f"ipc://{tmp}/raw-lat")
    time.sleep(0.3)
    payload = os.urandom(size)
    out = []
    for i in range(n + 50):
        t = time.perf_counter()
        pub.send_multipart([b"audio/kitchen/pi", payload])
        sub.recv_multipart()
        if i >= 50:
            out.append(time.perf_counter() - t)
    pub.close(0)
    sub.close(0)
    ctx.term()
    return out


# ------------------------------------------------------------------------------------ our bus


def _hub_proc(address: str, ready: mp.Event, stop: mp.Event) -> None:  # type: ignore[valid-type]
    from sensorium.pipeline.config import HubConfig
    from sensorium.pipeline.hub import Hub

    async def main() -> None:
        hub = Hub(HubConfig(address=address))
        await hub.start()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await hub.stop()

    asyncio.run(main())


def _our_sender(address: str, size: int, n: int, go: mp.Event) -> None:  # type: ignore[valid-type]
    from sensorium.pipeline.bus import Endpoints, Publisher
    from sensorium.pipeline.messages import AudioChunk

    async def main() -> None:
        pub = Publisher(Endpoints.from_address(address), hwm=0)
        go.wait()
        await asyncio.sleep(0.3)
        payload = os.urandom(size)
        for i in range(n):
            await pub.publish(AudioChunk(room="kitchen", source="pi", seq=i + 1, time=time.time(), data=payload))
        await pub.publish(AudioChunk(room="kitchen", source="pi", seq=n + 1, time=-1.0, data=b""))
        await asyncio.sleep(1.0)
        pub.close()

    asyncio.run(main())


async def our_throughput(address: str, size: int, n: int) -> dict[str, float]:
    from sensorium.pipeline.bus import Endpoints, Subscriber

    go = mp.Event()
    sub = Subscriber(Endpoints.from_address(address), ["audio/"], hwm=0)
    proc = mp.Process(target=_our_sender, args=(address, size, n, go))
    proc.start()
    await asyncio.sleep(0.2)
    go.set()
    got = 0
    t0 = t_last = 0.0

    async def consume() -> None:
        nonlocal got, t0, t_last
        while True:
            msg = await sub.recv()
            if msg.time < 0:
                return
            t_last = time.perf_counter()
            if not got:
                t0 = t_last
            got += 1

    task = asyncio.create_task(consume())
    while not task.done():  # the proxy drops at its high-water mark: END may be lost, so stop when idle
        before = got
        await asyncio.wait({task}, timeout=3.0)
        if got == before and got:
            task.cancel()
    dt = t_last - t0
    await asyncio.to_thread(proc.join)
    sub.close()
    return {"msgs_per_s": got / dt if dt else 0.0, "received": got, "sent": n}


async def our_latency(address: str, size: int, n: int) -> list[float]:
    from sensorium.pipeline.bus import Endpoints, Publisher, Subscriber
    from sensorium.pipeline.messages import AudioChunk

    ep = Endpoints.from_address(address)
    pub = Publisher(ep)
    sub = Subscriber(ep, ["audio/"])
    await asyncio.sleep(0.5)
    payload = os.urandom(size)
    out = []
    for i in range(n + 50):
        t = time.perf_counter()
        await pub.publish(AudioChunk(room="kitchen", source="pi", time=time.time(), data=payload))
        await sub.recv()
        if i >= 50:
            out.append(time.perf_counter() - t)
    pub.close()
    sub.close()
    return out


# ------------------------------------------------------------------------------------ events

_HUB = (
    "import asyncio, sys\n"
    "try:\n"
    "    from sensorium.pipeline.config import HubConfig\n"
    "    from sensorium.pipeline.hub import Hub\n"
    "except ImportError:  # a checkout from before the layers were imported as sensorium.*\n"
    "    from pipeline.config import HubConfig\n"
    "    from pipeline.hub import Hub\n"
    "asyncio.run(Hub(HubConfig(address=sys.argv[1], event_log=100000), state_dir=sys.argv[2]).run_forever())\n"
)


def start_logging_hub(address: str, state: str, code: Path = REPO) -> subprocess.Popen[bytes]:
    """A hub process with a persistent event log, running the code in ``code`` (a checkout)."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    proc = subprocess.Popen([sys.executable, "-c", _HUB, address, state], cwd=code, env=env)
    ctl = address.removeprefix("ipc://") + "-evt"
    deadline = time.monotonic() + 30
    while not os.path.exists(ctl) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    return proc


def _event_sender(address: str, n: int, go: mp.Event) -> None:  # type: ignore[valid-type]
    from sensorium.pipeline.bus import Endpoints, Publisher
    from sensorium.pipeline.messages import WakeDetected

    async def main() -> None:
        pub = Publisher(Endpoints.from_address(address), hwm=0)
        go.wait()
        await asyncio.sleep(0.3)
        for i in range(n):
            await pub.publish(WakeDetected(room="kitchen", source="bench", word=f"e{i}", score=0.9, time=time.time()))
        await asyncio.sleep(1.0)
        pub.close()

    asyncio.run(main())


def events_throughput(address: str, n: int) -> dict[str, float]:
    """A publisher floods the hub with ``n`` wake events; count them on the hub's events socket."""
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"wake/")
    sub.connect(f"{address}-evt")
    go = mp.Event()
    proc = mp.Process(target=_event_sender, args=(address, n, go))
    proc.start()
    time.sleep(0.2)
    go.set()
    got, t0, t_last = 0, 0.0, 0.0
    while got < n and sub.poll(3000):  # the hub's tap drops at its high-water mark: stop when idle
        sub.recv_multipart()
        t_last = time.perf_counter()
        if not got:
            t0 = t_last
        got += 1
    proc.join()
    sub.close(0)
    ctx.term()
    dt = t_last - t0
    return {"events_per_s": got / dt if dt else 0.0, "received": got, "sent": n}


async def event_latency(address: str, n: int) -> list[float]:
    """One event in flight: publish → the hub numbered, logged and published it (JSON on the events socket)."""
    from sensorium.pipeline.bus import Endpoints, Publisher
    from sensorium.pipeline.messages import WakeDetected

    pub = Publisher(Endpoints.from_address(address))
    sub = zmq.asyncio.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"wake/")
    sub.connect(f"{address}-evt")
    await asyncio.sleep(0.5)
    out = []
    for i in range(n + 20):
        t = time.perf_counter()
        await pub.publish(WakeDetected(room="kitchen", source="lat", word=f"l{i}", score=0.9, time=time.time()))
        await sub.recv_multipart()
        if i >= 20:
            out.append(time.perf_counter() - t)
    pub.close()
    sub.close(0)
    return out


def events_case(tmp: str, code: Path, n: int, n_lat: int) -> tuple[dict[str, float], list[float]]:
    """Throughput and latency of events through a fresh logging hub running ``code``."""
    address = f"ipc://{tmp}/ev-{os.getpid()}-{time.monotonic_ns()}"
    state = tempfile.mkdtemp(dir=tmp)
    hub = start_logging_hub(address, state, code)
    try:
        thr = events_throughput(address, n)
        lat = asyncio.run(event_latency(address, n_lat))
    finally:
        hub.terminate()
        hub.wait(10)
    return thr, lat


# ------------------------------------------------------------------------------------ driver


def _median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    return sorted(runs, key=lambda r: r["msgs_per_s"])[len(runs) // 2]


def run(quick: bool = False, repeat: int = 0) -> dict[str, object]:
    """Run every case; throughput is the median of ``repeat`` interleaved runs (default 1 quick, 5 full)."""
    repeat = repeat or (1 if quick else 5)
    n_thr = 20000 if quick else 100000
    n_lat = 1000 if quick else 5000
    results: dict[str, object] = {
        "benchmark": "bus",
        "transport": "ipc",
        "quick": quick,
        "repeat": repeat,
        "cases": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        address = f"ipc://{tmp}/hub"
        ready, stop = mp.Event(), mp.Event()
        hub = mp.Process(target=_hub_proc, args=(address, ready, stop))
        hub.start()
        ready.wait(30)
        try:
            for label, size in SIZES.items():
                n = n_thr if size < 4096 else n_thr // 10
                via = (f"{address}-pub", f"{address}-sub")
                runs: dict[str, list[dict[str, float]]] = {"raw": [], "proxy": [], "ours": []}
                for _ in range(repeat):  # interleaved, so a busy moment hits all three alike
                    runs["raw"].append(raw_throughput(tmp, size, n))
                    runs["proxy"].append(raw_throughput(tmp, size, n, via))
                    runs["ours"].append(asyncio.run(our_throughput(address, size, n)))
                raw_t, proxy_t, ours_t = (_median_run(runs[k]) for k in ("raw", "proxy", "ours"))
                raw_l = raw_latency(tmp, size, n_lat)
                proxy_l = raw_latency(tmp, size, n_lat, via)
                ours_l = asyncio.run(our_latency(address, size, n_lat))
                case = {
                    "raw_msgs_per_s": raw_t["msgs_per_s"],
                    "ours_msgs_per_s": ours_t["msgs_per_s"],
                    "proxy_msgs_per_s": proxy_t["msgs_per_s"],
                    "throughput_ratio": ours_t["msgs_per_s"] / raw_t["msgs_per_s"],
                    "ratio_vs_raw_through_proxy": ours_t["msgs_per_s"] / proxy_t["msgs_per_s"],
                    "proxy_p50_us": _pct(proxy_l, 50) * 1e6,
                    "proxy_p99_us": _pct(proxy_l, 99) * 1e6,
                    "raw_received": raw_t["received"],
                    "ours_received": ours_t["received"],
                    "sent": n,
                    "raw_p50_us": _pct(raw_l, 50) * 1e6,
                    "raw_p99_us": _pct(raw_l, 99) * 1e6,
                    "ours_p50_us": _pct(ours_l, 50) * 1e6,
                    "ours_p99_us": _pct(ours_l, 99) * 1e6,
                }
                results["cases"][label] = case  # type: ignore[index]
                checkpoint(results)
        finally:
            stop.set()
            hub.join(10)
        n_ev = 5000 if quick else 20000
        ev_runs = [events_case(tmp, REPO, n_ev, 100 if quick else 300) for _ in range(repeat)]
        thr = sorted(ev_runs, key=lambda r: r[0]["events_per_s"])[len(ev_runs) // 2][0]
        lat = [x for _, lats in ev_runs for x in lats]
        results["events"] = {
            "events_per_s": thr["events_per_s"],
            "received": thr["received"],
            "sent": thr["sent"],
            "latency_p50_ms": _pct(lat, 50) * 1e3,
            "latency_p95_ms": _pct(lat, 95) * 1e3,
            "latency_p99_ms": _pct(lat, 99) * 1e3,
        }
    return results


def render(results: dict[str, object]) -> str:
    lines = [
        "Bus over ipc, same run: raw pyzmq PUB→SUB direct, raw bytes through the hub's proxy, ours (typed",
        "header encoded/decoded, asyncio, through the hub's proxy in its own process).",
        "",
        "| payload | raw msg/s | raw via proxy | ours msg/s | ours/raw | ours/proxy | raw p50/p99 µs "
        "| proxy p50/p99 µs | ours p50/p99 µs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, c in results["cases"].items():  # type: ignore[union-attr]
        lines.append(
            f"| {label} | {c['raw_msgs_per_s']:.0f} | {c['proxy_msgs_per_s']:.0f} | {c['ours_msgs_per_s']:.0f} "
            f"| {c['throughput_ratio']:.2f} | {c['ratio_vs_raw_through_proxy']:.2f} "
            f"| {c['raw_p50_us']:.0f} / {c['raw_p99_us']:.0f} | {c['proxy_p50_us']:.0f} / {c['proxy_p99_us']:.0f} "
            f"| {c['ours_p50_us']:.0f} / {c['ours_p99_us']:.0f} |"
        )
    ev = results.get("events")
    if ev:
        lines += [
            "",
            "Events through the hub's persistent log (numbered, fsynced in groups, then published as JSON):",
            f"{ev['events_per_s']:.0f} events/s under a flood ({ev['received']} of {ev['sent']} received); "
            f"one in flight: p50 {ev['latency_p50_ms']:.2f} ms, p95 {ev['latency_p95_ms']:.2f} ms, "
            f"p99 {ev['latency_p99_ms']:.2f} ms",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer messages (CI-sized)")
    ap.add_argument("--repeat", type=int, default=0, help="throughput runs per case, median reported (default 5)")
    add_out(ap, RESULTS / "bus.json")
    args = ap.parse_args(argv)
    results = write_results(args.out, lambda: run(args.quick, args.repeat))
    print(render(results))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
