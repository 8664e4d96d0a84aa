"""The hub's bus forwarder before and after sender checks, side by side in one run.

Each case starts a real hub in its own process from a checkout (``--before``: libzmq's C proxy, no checks
on the bus; this checkout: the checking forwarder of ``pipeline.busguard``), with the same deployment
policy (two rooms, an edge with a camera in each, a worker), over ipc, without keys and with CURVE.
Through it, as an edge would: audio chunks (80 ms of 16 kHz PCM, 2,560 B) and camera frames (64 KiB)
encoded by our codec, sent as fast as a publisher process can and counted by a subscriber (throughput),
then one at a time (one-way latency, publisher and subscriber in one process). Interleaved: a busy
moment of the machine hits both alike.

Run: ``python -m benchmarks.forwarder --before DIR`` (DIR: a checkout of the code to compare with, e.g.
``git worktree add /tmp/base <commit>``); writes ``benchmarks/results/forwarder.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

from benchmarks.outfile import add_out

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "forwarder.json"
PCM = 2560
FRAME = 64 * 1024

_HUB = r"""
import asyncio, sys
try:
    from sensorium.pipeline.config import HubConfig
    from sensorium.pipeline.hub import Hub, PublishPolicy
except ImportError:  # a checkout from before the layers were imported as sensorium.*
    from pipeline.config import HubConfig
    from pipeline.hub import Hub, PublishPolicy
policy = PublishPolicy(
    rooms=frozenset({"kitchen", "hall"}),
    kinds={"kitchen-pi": frozenset({"node_status", "playback", "error"}),
           "hall-pi": frozenset({"node_status", "playback", "error"}),
           "cpu0": frozenset({"wake", "detections", "status", "error"})},
    edge_room={"kitchen-pi": "kitchen", "hall-pi": "hall"},
)
try:  # a checkout with cameras in the policy
    policy = PublishPolicy(rooms=policy.rooms, kinds=policy.kinds, edge_room=policy.edge_room,
        sources={"kitchen": frozenset({"kitchen-pi", "kitchen-cam"}), "hall": frozenset({"hall-pi"})},
        owners={"kitchen-cam": "kitchen-pi"})
except TypeError:
    pass
async def main():
    h = Hub(HubConfig(address=sys.argv[1], keys=sys.argv[2]), policy=policy)
    await h.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await h.stop()
asyncio.run(main())
"""


def _pct(xs: list[float], p: float) -> float:
    from sensorium.pipeline.metrics import percentile

    return percentile(xs, p) or 0.0


def _frames(kind: str, t: float) -> list[bytes]:
    from sensorium.pipeline.codec import encode
    from sensorium.pipeline.messages import AudioChunk, VideoFrame

    if kind == "audio":
        return encode(AudioChunk(room="kitchen", source="kitchen-pi", time=t, data=os.urandom(PCM)))
    return encode(
        VideoFrame(room="kitchen", source="kitchen-cam", time=t, width=640, height=480, data=os.urandom(FRAME))
    )


def _socket(ctx: zmq.Context, kind: int, keys: str, name: str) -> zmq.Socket:
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    if keys:
        from sensorium.pipeline.security import node_keys

        node_keys(Path(keys).parent / name, name).apply_client(s)
    return s


def _sender(pub_ep: str, keys: str, kind: str, n: int, go: mp.Event) -> None:  # type: ignore[valid-type]
    ctx = zmq.Context()
    s = _socket(ctx, zmq.PUB, keys, "kitchen-pi")
    s.setsockopt(zmq.SNDHWM, 0)
    s.connect(pub_ep)
    frames = _frames(kind, 1.0)
    end = _frames(kind, -1.0)
    go.wait()
    time.sleep(0.5)
    for _ in range(n):
        s.send_multipart(frames, copy=len(frames[2]) < 65536)
    s.send_multipart(end)
    time.sleep(1.0)
    s.close(0)
    ctx.term()


def throughput(pub_ep: str, sub_ep: str, keys: str, kind: str, n: int) -> dict[str, float]:
    ctx = zmq.Context()
    sub = _socket(ctx, zmq.SUB, keys, "watcher")
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, f"{'audio' if kind == 'audio' else 'video'}/".encode())
    sub.connect(sub_ep)
    go = mp.Event()
    proc = mp.Process(target=_sender, args=(pub_ep, keys, kind, n, go))
    proc.start()
    time.sleep(0.3)
    go.set()
    got, t0, t_last = 0, 0.0, 0.0
    while sub.poll(3000):  # the forwarder drops at its high-water mark: END may be lost
        from sensorium.pipeline.codec import decode

        msg = decode(sub.recv_multipart())
        if msg.time < 0:
            break
        t_last = time.perf_counter()
        if not got:
            t0 = t_last
        got += 1
    proc.join()
    sub.close(0)
    ctx.term()
    dt = t_last - t0
    return {"msgs_per_s": got / dt if dt else 0.0, "received": got, "sent": n}


def latency(pub_ep: str, sub_ep: str, keys: str, kind: str, n: int) -> list[float]:
    from sensorium.pipeline.codec import decode

    ctx = zmq.Context()
    pub = _socket(ctx, zmq.PUB, keys, "kitchen-pi")
    sub = _socket(ctx, zmq.SUB, keys, "watcher")
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    pub.connect(pub_ep)
    sub.connect(sub_ep)
    frames = _frames(kind, 1.0)
    for _ in range(100):  # until the subscription is through
        pub.send_multipart(frames)
        if sub.poll(50):
            break
    while sub.poll(200):
        sub.recv_multipart()
    out = []
    for i in range(n + 20):
        t = time.perf_counter()
        pub.send_multipart(frames)
        decode(sub.recv_multipart())
        if i >= 20:
            out.append(time.perf_counter() - t)
    pub.close(0)
    sub.close(0)
    ctx.term()
    return out


def _keys(folder: Path) -> str:
    from sensorium.pipeline import security

    hub = folder / "hub"
    pub = security.init_hub(hub)
    for name in ("kitchen-pi", "watcher"):
        security.new_node(folder / name, name, pub)
        security.enrol(hub, folder / name / f"{name}.key")
    return str(hub)


def one_case(code: Path, tmp: Path, curve: bool, kind: str, n: int, n_lat: int) -> dict[str, object]:
    address = f"ipc://{tmp}/hub-{time.monotonic_ns()}"
    keys = _keys(tmp / f"keys-{time.monotonic_ns()}") if curve else ""
    env = {**os.environ, "PYTHONPATH": str(code)}
    hub = subprocess.Popen(
        [sys.executable, "-c", _HUB, address, keys], cwd=code, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert hub.stdout is not None and hub.stdout.readline().strip() == b"ready", "the hub did not start"
        pub_ep, sub_ep = f"{address}-pub", f"{address}-sub"
        thr = throughput(pub_ep, sub_ep, keys, kind, n)
        lat = latency(pub_ep, sub_ep, keys, kind, n_lat)
    finally:
        if hub.stdin is not None:
            hub.stdin.close()
        hub.wait(15)
    return {**thr, "p50_us": _pct(lat, 50) * 1e6, "p99_us": _pct(lat, 99) * 1e6}


def run(before: Path, repeat: int, quick: bool) -> dict[str, object]:
    sizes = {"audio": (5000 if quick else 20000), "video": (500 if quick else 3000)}
    n_lat = 200 if quick else 2000
    codes = {"before": before.resolve(), "after": REPO}
    cases: dict[str, dict[str, list[dict[str, object]]]] = {}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="fwd-", dir="/tmp") as tmp:
        for _ in range(repeat):
            for curve in (False, True):
                for kind, n in sizes.items():
                    for which, code in codes.items():  # interleaved: a busy moment hits both alike
                        key = f"{kind} {'CURVE' if curve else 'no keys'}"
                        r = one_case(code, Path(tmp), curve, kind, n, n_lat)
                        cases.setdefault(key, {}).setdefault(which, []).append(r)
            load.append(os.getloadavg()[0])
    table: dict[str, dict[str, dict[str, float]]] = {}
    for key, by in cases.items():
        table[key] = {}
        for which, runs in by.items():
            runs.sort(key=lambda r: r["msgs_per_s"])  # type: ignore[arg-type,return-value]
            mid = runs[len(runs) // 2]
            table[key][which] = {
                "msgs_per_s": round(float(mid["msgs_per_s"]), 1),  # type: ignore[arg-type]
                "received": mid["received"],  # type: ignore[dict-item]
                "sent": mid["sent"],  # type: ignore[dict-item]
                "p50_us": round(sorted(float(r["p50_us"]) for r in runs)[len(runs) // 2], 1),  # type: ignore[arg-type]
                "p99_us": round(sorted(float(r["p99_us"]) for r in runs)[len(runs) // 2], 1),  # type: ignore[arg-type]
            }
    from benchmarks.__main__ import machine

    return {
        "benchmark": "forwarder",
        "machine": machine(),
        "before": str(before),
        "repeat": repeat,
        "quick": quick,
        "load_avg_1m": load,
        "cases": table,
    }


def render(results: dict[str, object]) -> str:
    lines = [
        "Hub bus forwarder, before (libzmq proxy, no checks) and after (checking forwarder), same run, over ipc;"
        f" load average {', '.join(f'{x:.1f}' for x in results['load_avg_1m'])}",  # type: ignore[union-attr]
        "",
        "| case | before msg/s | after msg/s | after/before | before p50/p99 µs | after p50/p99 µs | received b/a |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, c in results["cases"].items():  # type: ignore[union-attr]
        b, a = c["before"], c["after"]
        ratio = a["msgs_per_s"] / b["msgs_per_s"] if b["msgs_per_s"] else 0.0
        lines.append(
            f"| {key} | {b['msgs_per_s']:.0f} | {a['msgs_per_s']:.0f} | {ratio:.2f} | {b['p50_us']:.0f} / "
            f"{b['p99_us']:.0f} | {a['p50_us']:.0f} / {a['p99_us']:.0f} | {b['received']}/{b['sent']}, "
            f"{a['received']}/{a['sent']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.forwarder", description=__doc__.split("\n")[0])
    ap.add_argument("--before", type=Path, required=True, help="checkout of the code to compare with")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case, median reported (default 3)")
    ap.add_argument("--quick", action="store_true", help="fewer messages (CI-sized)")
    add_out(ap, RESULTS)
    args = ap.parse_args(argv)
    results = run(args.before, args.repeat, args.quick)
    print(render(results))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
