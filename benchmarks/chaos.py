"""Chaos: SIGKILL a random process of a streaming deployment, again and again, and check the client's events.

Real processes on ipc, from a generated deployment file: ``sensorium hub`` (keeping ``event_log``
events), ``sensorium worker`` running the ``wake`` stage, ``sensorium edge`` playing a looped "hey
jarvis" (Piper) as its microphone, a reasoning-loop client that persists every event with an fsync
and resumes after the last one it holds (``subscriber`` below), and a ticker publishing
``detections`` events at ``ticker_rate`` (a busy house: it makes the log roll over in seconds).

Each round waits a random pause, SIGKILLs one of hub, worker, edge and client (a balanced, shuffled,
seeded order), restarts it with its normal command line after ``restart_after`` (systemd's
``RestartSec``) and measures the recovery: kill → the client holds a wake event for "hey jarvis"
captured after the kill (the whole path serves again; it includes waiting for the next utterance
of the loop, at most its period ``UTTERANCE_PERIOD``). ``long_outages`` of the client kills keep the
client down until the hub's log has rolled past it, so it must get an explicit ``events_lost``.

Afterwards the client's file is checked against the hub's log: every sequence number exactly once in
order (no duplicate, no gap), each event as the hub logged it, and each ``events_lost`` a real roll-over
(the hub had numbered ``event_log`` events after the lost range before it told the client).

``python -m benchmarks --only chaos`` runs 60 kills (``quick``: 20); ``tests/test_power_loss.py`` runs
20 as a slow test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.outfile import add_out, write_results
from benchmarks.processes import REPO, SENSORIUM, Processes

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = ("hub", "worker", "edge", "client")
WORKER = "cpu0"
UTTERANCE_PERIOD = 2.2
"""Seconds per loop of the edge's WAV (0.3 s silence, "hey jarvis", 1 s silence); one wake per loop."""


# --------------------------------------------------------------------------------------- helpers


def resume_point(path: Path) -> int:
    """Sequence number of the last complete event in ``path``; cuts off a torn last line."""
    if not path.exists():
        return 0
    raw = path.read_bytes()
    end = raw.rfind(b"\n") + 1
    if end < len(raw):
        with open(path, "r+b") as f:
            f.truncate(end)
    lines = raw[:end].splitlines()
    return int(json.loads(lines[-1])["seq"]) if lines else 0


async def subscriber(address: str, out: Path, arrivals: Path | None = None) -> None:
    """A reasoning loop's event consumer that survives ``kill -9``.

    Each event (``events_lost`` included: its ``seq`` is the last one lost) goes to ``out`` with one
    append and an fsync, and on start it resumes after the last complete line, so every event the hub
    logged must arrive exactly once across restarts. ``arrivals`` gets "seq unix-time" per event.
    """
    from sensorium.pipeline.client import Client
    from sensorium.pipeline.codec import to_json
    from sensorium.pipeline.node import HubUnavailable

    since = resume_point(out)
    print(f"subscriber: resuming after seq {since}", flush=True)
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    afd = os.open(arrivals, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if arrivals else None
    delay = 0.2
    async with Client(address, name="chaos-subscriber", heartbeat=0.2) as client:
        while True:
            try:
                async for ev in client.events(since=since):
                    os.write(fd, to_json(ev) + b"\n")
                    os.fsync(fd)
                    if afd is not None:
                        os.write(afd, b"%d %.6f\n" % (ev.seq, time.time()))
                    since = ev.seq
                    delay = 0.2
            except (ConnectionError, HubUnavailable) as exc:
                # No hub (yet): wait with backoff and ask again from the last event we hold.
                print(f"subscriber: {exc}; retrying in {delay:.1f}s", flush=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


async def ticker(address: str, rate: float) -> None:
    """Publish ``detections`` events for a camera nobody watches, ``rate`` a second, in small bursts (as the
    deployment's worker "ticker", which the hub lets publish them)."""
    from sensorium.pipeline.bus import Endpoints, Publisher
    from sensorium.pipeline.clock import Clock
    from sensorium.pipeline.messages import Detections

    pub = Publisher(Endpoints.from_address(address))
    clock = Clock()
    burst = 4
    for i in range(1, 2**62):
        await pub.publish(
            Detections(room="kitchen", source="ticker", camera="ticker", time=clock.now(), frame_seq=i, persons=0)
        )
        if i % burst == 0:
            await asyncio.sleep(burst / rate)


class Tail:
    """The complete lines appended to a file since the last look (a torn last line waits for its end)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def lines(self) -> list[bytes]:
        """New complete lines."""
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        return [ln for ln in data[:end].split(b"\n") if ln]


def events_in(path: Path) -> list[dict[str, Any]]:
    """JSON lines of ``path``; the last piece may be a line being written and is left out."""
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    return [json.loads(ln) for ln in lines[:-1] if ln]


def arrivals_in(path: Path) -> dict[int, float]:
    """seq → when the client wrote it (the first time)."""
    out: dict[int, float] = {}
    if path.exists():
        for ln in path.read_bytes().split(b"\n")[:-1]:
            seq, t = ln.split()
            out.setdefault(int(seq), float(t))
    return out


def hub_log(path: Path) -> dict[int, dict[str, Any]]:
    """The hub's log file: seq → event (torn or damaged lines skipped, as the hub does)."""
    out: dict[int, dict[str, Any]] = {}
    if not path.exists():
        return out
    for ln in path.read_bytes().splitlines():
        try:
            seq, _topic, js = json.loads(ln)
            out[int(seq)] = json.loads(js)
        except ValueError:
            continue
    return out


def last_logged(path: Path) -> int:
    """The newest sequence number in the hub's log file (0 if none)."""
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, 2) - 65536))
        for ln in reversed(f.read().split(b"\n")):
            try:
                return int(json.loads(ln)[0])
            except (ValueError, IndexError, TypeError):
                continue
    return 0


def check_stream(
    received: list[dict[str, Any]], arrivals: dict[int, float], logged: dict[int, dict[str, Any]], capacity: int
) -> dict[str, Any]:
    """Duplicates, gaps, events that differ from the hub's, and ``events_lost`` items that were no roll-over."""
    expected = 1
    duplicates = gaps = 0
    lost: list[dict[str, Any]] = []
    differ: list[int] = []
    by_seq = {e["seq"]: e for e in received if e["type"] != "events_lost"}
    for ev in received:
        if ev["type"] == "events_lost":
            real = ev["first_seq"] == expected and ev["seq"] == ev["last_seq"] >= ev["first_seq"]
            # The hub says "lost" only when its log's oldest is past them: it then held `capacity` events
            # after the range, so the last of those was made before the client was told.
            witness = logged.get(ev["last_seq"] + capacity) or by_seq.get(ev["last_seq"] + capacity)
            told = arrivals.get(ev["seq"])
            rolled = witness is not None and told is not None and witness["time"] <= told + 0.2
            lost.append(
                {"first_seq": ev["first_seq"], "last_seq": ev["last_seq"], "contiguous": real, "rolled_over": rolled}
            )
            expected = max(expected, ev["last_seq"] + 1)
            continue
        if ev["seq"] < expected:
            duplicates += 1
            continue
        if ev["seq"] > expected:
            gaps += ev["seq"] - expected
        expected = ev["seq"] + 1
        if ev["seq"] in logged and logged[ev["seq"]] != ev:
            differ.append(ev["seq"])
    return {
        "received": len(received),
        "last_seq": expected - 1,
        "duplicates": duplicates,
        "gaps": gaps,
        "differ_from_log": differ[:20],
        "lost": lost,
        "false_lost": sum(1 for x in lost if not (x["contiguous"] and x["rolled_over"])),
    }


def percentile(xs: list[float], p: float) -> float | None:
    """Nearest-rank percentile (``pipeline.metrics.percentile``; None for no samples)."""
    from sensorium.pipeline.metrics import percentile as nearest_rank

    return nearest_rank(xs, p)


# ---------------------------------------------------------------------------------------- the run


@dataclass
class ChaosOptions:
    """One chaos run."""

    folder: Path
    """Deployment, logs, data and the client's files."""
    kills: int = 20
    """How many SIGKILLs."""
    seed: int = 0
    """Seeds the order of targets and the pauses."""
    restart_after: float = 1.0
    """Seconds before a killed process is started again (systemd's RestartSec)."""
    pause: tuple[float, float] = (0.3, 3.0)
    """Random wait (uniform, seconds) between a recovery and the next kill."""
    recovery_timeout: float = 90.0
    """A kill not recovered from within this long fails the run."""
    event_log: int = 600
    """Events the hub keeps: 15 s of the ticker, longer than a restart of the client takes."""
    ticker_rate: float = 40.0
    """Events a second from the ticker."""
    long_outages: int = 1
    """Client kills that keep the client down until the log rolled past it."""
    progress: Callable[[str], None] = field(default=lambda s: print(s, file=sys.stderr, flush=True))


def _wav(folder: Path) -> Path:
    import numpy as np

    from sensorium.evaluation.media import RATE, speech, write_wav

    cache = REPO / ".cache" / "chaos"
    cache.mkdir(parents=True, exist_ok=True)
    pcm = np.concatenate(
        [np.zeros(int(0.3 * RATE), np.int16), speech("hey jarvis", "piper:joe", cache), np.zeros(RATE, np.int16)]
    )
    return write_wav(folder / "hey_jarvis.wav", pcm)


def deployment(folder: Path, capacity: int) -> tuple[Path, str]:
    """The deployment file and hub address of a chaos run."""
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    address = f"ipc://{folder}/hub"
    cfg = folder / "deploy.toml"
    cfg.write_text(
        f"""data_dir = "{data}"
[hub]
address = "{address}"
heartbeat = "200ms"
down_after = "1s"
event_log = {capacity}
[rooms.kitchen]
[edges.kitchen-pi]
room = "kitchen"
microphone = {{}}
[workers.{WORKER}]
stages = ["wake"]
device = "cpu"
[workers.ticker]
stages = ["detect"]
[stages.wake]
refractory = "1s"
"""
    )
    return cfg, address


def run_chaos(opts: ChaosOptions) -> dict[str, Any]:
    """Kill and restart, ``opts.kills`` times; the results say what the client got and how fast it came back."""
    say = opts.progress
    folder = opts.folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    cfg, address = deployment(folder, opts.event_log)
    wav = _wav(folder)
    received, arrivals_file = folder / "received.jsonl", folder / "arrivals.txt"
    log_file = folder / "data" / "hub" / "events.jsonl"
    me = [sys.executable, "-m", "benchmarks.chaos"]
    procs = Processes(
        folder / "logs",
        {
            "hub": [*SENSORIUM, "hub", "--config", str(cfg)],
            "worker": [*SENSORIUM, "worker", "--config", str(cfg), "--name", WORKER],
            "edge": [*SENSORIUM, "edge", "--config", str(cfg), "--name", "kitchen-pi", "--wav", str(wav), "--loop"],
            "client": [*me, "subscriber", address, str(received), str(arrivals_file)],
            "ticker": [*me, "ticker", address, str(opts.ticker_rate)],
        },
    )
    rng = random.Random(opts.seed)
    order = [TARGETS[i % len(TARGETS)] for i in range(opts.kills)]
    rng.shuffle(order)
    client_kills = [i for i, t in enumerate(order) if t == "client"]
    long_ones = set(rng.sample(client_kills, min(opts.long_outages, len(client_kills))))

    events_tail, arrivals_tail = Tail(received), Tail(arrivals_file)
    wake_times: list[tuple[float, int]] = []  # (capture time, seq) of every "hey jarvis" the client holds
    arrived: dict[int, float] = {}

    def wakes_after(t: float) -> float | None:
        for ln in arrivals_tail.lines():
            seq, at = ln.split()
            arrived.setdefault(int(seq), float(at))
        for ln in events_tail.lines():
            ev = json.loads(ln)
            if ev["type"] == "wake" and ev["word"] == "hey_jarvis":
                wake_times.append((ev["time"], ev["seq"]))
        return next((arrived[seq] for tm, seq in wake_times if tm > t and seq in arrived), None)

    def wait(what: str, cond: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = cond()
            if value:
                return value
            dead = procs.dead()
            if dead:
                raise RuntimeError(f"{dead} exited by themselves while waiting for {what}\n{procs.logs()}")
            time.sleep(0.05)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{procs.logs()}")

    kills: list[dict[str, Any]] = []
    t_start = time.monotonic()
    try:
        for name in ("hub", "worker", "edge", "client", "ticker"):
            procs.start(name)
        t_first = time.time()
        wait("a first wake event at the client", lambda: wakes_after(t_first - 60), opts.recovery_timeout)
        say(f"chaos: serving; {opts.kills} kills (seed {opts.seed}): {' '.join(order)}")
        for i, target in enumerate(order):
            time.sleep(rng.uniform(*opts.pause))
            held = max((e["seq"] for e in events_in(received)), default=0)  # read only: the client is writing
            t_kill = time.time()
            procs.kill(target)
            entry: dict[str, Any] = {"n": i + 1, "target": target, "at_s": round(time.monotonic() - t_start, 2)}
            if i in long_ones:
                # the client stays away until the hub's log holds nothing it has not seen: a real roll-over
                wait("the log to roll over", lambda h=held: last_logged(log_file) > h + opts.event_log + 20, 120)
                entry["long_outage"] = True
            else:
                time.sleep(opts.restart_after)
            procs.start(target)
            seen = wait(f"a wake after kill {i + 1} ({target})", lambda t=t_kill: wakes_after(t), opts.recovery_timeout)
            entry["recovery_s"] = round(seen - t_kill, 3)
            kills.append(entry)
            say(f"chaos: kill {i + 1}/{opts.kills} {target}: recovered in {entry['recovery_s']:.2f} s")
        time.sleep(1.0)
    finally:
        procs.stop()
    check = check_stream(events_in(received), arrivals_in(arrivals_file), hub_log(log_file), opts.event_log)
    normal = [k["recovery_s"] for k in kills if not k.get("long_outage")]
    per_target = {
        t: {
            "kills": sum(1 for k in kills if k["target"] == t),
            "p50_s": percentile([k["recovery_s"] for k in kills if k["target"] == t and not k.get("long_outage")], 50),
            "max_s": max(
                (k["recovery_s"] for k in kills if k["target"] == t and not k.get("long_outage")), default=None
            ),
        }
        for t in TARGETS
    }
    problems = []
    if check["duplicates"]:
        problems.append(f"{check['duplicates']} duplicate events at the client")
    if check["gaps"]:
        problems.append(f"{check['gaps']} sequence numbers never reached the client (no events_lost for them)")
    if check["differ_from_log"]:
        problems.append(f"events differ from the hub's log: {check['differ_from_log']}")
    if check["false_lost"]:
        problems.append(f"{check['false_lost']} events_lost without a real roll-over: {check['lost']}")
    if len(kills) != opts.kills:
        problems.append(f"only {len(kills)} of {opts.kills} kills done")
    return {
        "benchmark": "chaos",
        "seed": opts.seed,
        "kills": len(kills),
        "order": order,
        "restart_after_s": opts.restart_after,
        "event_log_capacity": opts.event_log,
        "ticker_rate": opts.ticker_rate,
        "utterance_period_s": UTTERANCE_PERIOD,
        "recovery_s": {
            "p50": percentile(normal, 50),
            "p95": percentile(normal, 95),
            "max": max(normal, default=None),
            "count": len(normal),
        },
        "per_target": per_target,
        "starts": dict(procs.starts),
        "stream": check,
        "rounds": kills,
        "wall_s": round(time.monotonic() - t_start, 1),
        "problems": problems,
        "ok": not problems,
    }


def render(results: dict[str, Any]) -> str:
    """Markdown lines for the summary."""
    r, s = results["recovery_s"], results["stream"]
    lines = [
        f"{results['kills']} SIGKILLs (seed {results['seed']}; restart after {results['restart_after_s']:g} s), "
        f"{'OK' if results['ok'] else 'FAILED'}",
        f"recovery, kill → client holds a new wake event: p50 {r['p50']:.2f} s, p95 {r['p95']:.2f} s, "
        f"max {r['max']:.2f} s (includes up to {results['utterance_period_s']:g} s until the next utterance)",
        f"client: {s['received']} events, duplicates {s['duplicates']}, gaps {s['gaps']}, "
        f"events_lost {len(s['lost'])} (all real roll-overs: {s['false_lost'] == 0})",
        "| killed | times | recovery p50 s | max s |",
        "|---|---|---|---|",
    ]
    for t, v in results["per_target"].items():
        p50 = f"{v['p50_s']:.2f}" if v["p50_s"] is not None else "-"
        mx = f"{v['max_s']:.2f}" if v["max_s"] is not None else "-"
        lines.append(f"| {t} | {v['kills']} | {p50} | {mx} |")
    lines += [f"PROBLEM: {p.splitlines()[0]}" for p in results["problems"]]
    return "\n".join(lines)


def run(quick: bool = False) -> dict[str, Any]:
    """The benchmark: 60 kills (``quick``: 20)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sensorium-chaos-", dir="/tmp") as tmp:
        return run_chaos(ChaosOptions(folder=Path(tmp), kills=20 if quick else 60, seed=1, long_outages=2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("subscriber", help="(helper process) the resuming, fsyncing client")
    p.add_argument("address")
    p.add_argument("out", type=Path)
    p.add_argument("arrivals", type=Path, nargs="?")
    p = sub.add_parser("ticker", help="(helper process) detections events at a steady rate")
    p.add_argument("address")
    p.add_argument("rate", type=float)
    p = sub.add_parser("run", help="a chaos run, results as JSON on stdout")
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folder", type=Path, required=True)
    add_out(p, None, "stdout only")
    args = ap.parse_args(argv)
    if args.cmd == "subscriber":
        asyncio.run(subscriber(args.address, args.out, args.arrivals))
    elif args.cmd == "ticker":
        asyncio.run(ticker(args.address, args.rate))
    else:
        opts = ChaosOptions(folder=args.folder, kills=args.kills, seed=args.seed)
        results = write_results(args.out, lambda: run_chaos(opts)) if args.out else run_chaos(opts)
        print(json.dumps(results, indent=1))
        print(render(results), file=sys.stderr)
        return 0 if results["ok"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
