"""Soak: the sample session replayed in a loop through a real deployment for an hour (or months), watched.

Real separate processes on ipc (or loopback tcp), from a generated deployment file: ``sensorium hub``;
``sensorium worker`` with every stage on the CPU; one ``sensorium edge`` per room as its loudspeaker
(answers written as WAV files); ``sensorium agent`` answering; ``sensorium events --since 0`` as the
subscribing client, its JSON lines kept; and a replay publisher that plays the sample session's
microphones and cameras into the hub again and again, as its edge nodes did (``evaluation.replay``).

Every ``interval`` (30 s) the RSS, open file descriptors and threads of each process (children
included) and the size of the hub's event log are sampled. Per loop the client's events are cut out by
the loop's time window and reduced to what must be identical in every loop: wake words, final
transcripts, identified speakers, named people entering and leaving rooms (``soak_signature``). The
rest is reported per loop and not judged: latency, accuracy against the labels, detections, face
matches, unknown-people counts, answers spoken, drops and budget violations (all timing-dependent).

The run fails (``ok`` false, ``python -m benchmarks.soak`` exits 1) when a process dies, the client's stream has
a gap or a duplicate, a loop's signatures differ from the first loop's, or a process keeps growing:
over the last half of the run, RSS or descriptors rise faster than the limit (``RSS_LIMIT_MIB_H``,
``FD_LIMIT_H``) by least squares, more than three standard errors above zero, and by the Theil–Sen
estimate (the median of pairwise slopes, blind to a spike) in each half of that window, so that one
step (the allocator taking another arena once) is not a leak while growth that goes on is. The first
half is warm-up (models load, caches and allocator arenas fill, the event log reaches its bound).

``python -m benchmarks --only soak`` runs an hour (``quick``: 3 minutes) and writes
``benchmarks/results/soak.json`` and ``soak.png``; ``python -m benchmarks.soak --duration 1h`` is the same run
(with ``--dir``, ``--out``, ``--tcp``, ``--worker-per-stage``: ``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.outfile import add_out, checkpoint, dump
from benchmarks.processes import REPO, SENSORIUM, Processes
from sensorium.evaluation.ports import free_tcp_base

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = REPO / ".cache" / "sample"
STAGES = ["wake", "arbiter", "stt", "speaker", "detect", "face", "presence", "tts"]
WORKER = "local"
LEFT_AFTER = 5.0
"""Presence timeout of the soak deployment: short, so everyone has left before the next loop starts."""
SETTLE = LEFT_AFTER + 3.0
"""A loop ends after this long without any answer on the bus (people have left, answers were spoken)."""
EVENT_LOG = 1000
"""Events the hub keeps: about 7 loops, so the log reaches its bound (and compacts) in the first half."""
RSS_LIMIT_MIB_H = 1.0
"""Growth limit per process: 1 MiB/h is 2.1 GiB in three months, what a 2 GiB Pi edge could not absorb."""
FD_LIMIT_H = 2.0
"""Descriptor growth limit per process: two an hour reach the default 1024 within a month."""
SIGNIFICANCE = 3.0
"""A slope counts as growth only this many standard errors above zero."""


# ------------------------------------------------------------------------------------------ analysis


def soak_signature(msg: Any) -> tuple[Any, ...] | None:
    """What must be the same in every loop: ``evaluation.report.signature`` without what timing decides.

    A final transcript's ``speaker`` field is left out (it is filled only if speaker ID answered within
    ``speaker_wait``; the ``speaker`` event itself is compared), and presence counts only named people
    entering and leaving (``present`` repeats on a timer; unknown counts follow the detector's frames).
    """
    from sensorium.evaluation.report import signature
    from sensorium.pipeline.messages import Presence, SpeakerIdentified, Transcript, WakeDetected

    if isinstance(msg, WakeDetected | SpeakerIdentified):
        return signature(msg)
    if isinstance(msg, Transcript):
        sig = signature(msg)
        return sig[:3] if sig is not None else None
    if isinstance(msg, Presence) and msg.person != "unknown" and msg.state in ("entered", "left"):
        return signature(msg)
    return None


def theil_sen(points: Sequence[tuple[float, float]]) -> float | None:
    """Median of all pairwise slopes, per hour: a spike or one step among many flat points does not move it."""
    pairs = [(y2 - y1) / (t2 - t1) for (t1, y1), (t2, y2) in itertools.combinations(points, 2) if t2 > t1]
    return statistics.median(pairs) * 3600 if pairs else None


def trend(points: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Slope per hour of ``(seconds, value)`` points: least squares with its standard error and the residual
    noise; Theil–Sen over all of them and over each half of them (``halves_h``)."""
    n = len(points)
    out: dict[str, Any] = {"n": n, "slope_h": None, "stderr_h": None, "theil_sen_h": None, "halves_h": []}
    if n < 3:
        return out
    ts = [p[0] for p in points]
    ys = [p[1] for p in points]
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    sxx = sum((t - mt) ** 2 for t in ts)
    if sxx <= 0:
        return out
    b = sum((t - mt) * (y - my) for t, y in points) / sxx
    a = my - b * mt
    ss = sum((y - (a + b * t)) ** 2 for t, y in points)
    se = math.sqrt(ss / (n - 2) / sxx)
    mid = (ts[0] + ts[-1]) / 2
    halves = [[p for p in points if p[0] < mid], [p for p in points if p[0] >= mid]]
    out.update(
        slope_h=b * 3600,
        stderr_h=se * 3600,
        theil_sen_h=theil_sen(points),
        halves_h=[theil_sen(h) for h in halves if len(h) >= 3],
        noise=math.sqrt(ss / (n - 2)),
        first=ys[0],
        last=ys[-1],
        low=min(ys),
        high=max(ys),
    )
    return out


def grows(tr: dict[str, Any], limit_h: float, significance: float = SIGNIFICANCE) -> bool:
    """True when a trend is growth that goes on: the least-squares slope over ``limit_h`` and ``significance``
    standard errors above zero, and the Theil–Sen slope over ``limit_h`` in each half (one step, as an
    allocator taking another arena, rises in one half only; a leak rises in both)."""
    slope, se, halves = tr.get("slope_h"), tr.get("stderr_h"), tr.get("halves_h") or []
    if slope is None or se is None or len(halves) < 2:
        return False
    return slope > limit_h and slope > significance * se and all(h is not None and h > limit_h for h in halves)


def last_half(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The samples of the second half of the run (by time)."""
    if not samples:
        return []
    mid = samples[0]["t"] + (samples[-1]["t"] - samples[0]["t"]) / 2
    return [s for s in samples if s["t"] >= mid]


def growth(
    samples: list[dict[str, Any]], rss_limit: float = RSS_LIMIT_MIB_H, fd_limit: float = FD_LIMIT_H
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Per process: RSS, descriptor and thread trends over the last half; and the problems (growth)."""
    half = last_half(samples)
    names = sorted({n for s in samples for n in s["procs"]})
    out: dict[str, dict[str, Any]] = {}
    problems = []
    for name in names:
        series = [(s["t"], s["procs"][name]) for s in half if name in s["procs"]]
        entry = {
            "rss_mib": trend([(t, v[0]) for t, v in series]),
            "fds": trend([(t, v[1]) for t, v in series]),
            "threads": trend([(t, v[2]) for t, v in series]),
        }
        for key, limit, unit in (("rss_mib", rss_limit, "MiB"), ("fds", fd_limit, "descriptors")):
            tr = entry[key]
            entry[key]["grows"] = grows(tr, limit)
            if entry[key]["grows"]:
                halves = ", ".join(f"{h:.2f}" for h in tr["halves_h"])
                problems.append(
                    f"{name}: {unit} grow {tr['slope_h']:.2f}/h (±{tr['stderr_h']:.2f}; Theil–Sen in each half of "
                    f"it {halves}/h) over the last half, limit {limit:g}/h"
                )
        out[name] = entry
    return out, problems


def events_in(path: Path) -> list[dict[str, Any]]:
    """The client's events (JSON lines); a last line still being written is left out."""
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    return [json.loads(ln) for ln in lines[:-1] if ln.strip()]


def stream_problems(events: list[dict[str, Any]]) -> list[str]:
    """Gaps and duplicates in the client's sequence numbers (it asked for everything from 1)."""
    seqs = [e["seq"] for e in events]
    dup = sorted(s for s, c in Counter(seqs).items() if c > 1)
    missing = sorted(set(range(1, max(seqs, default=0) + 1)) - set(seqs))
    out = []
    if dup:
        out.append(f"client received {len(dup)} sequence numbers twice (first {dup[:5]})")
    if missing:
        out.append(f"client never received {len(missing)} sequence numbers (first {missing[:5]})")
    if seqs != sorted(seqs):
        out.append("client received events out of order")
    return out


def per_loop(events: list[dict[str, Any]], loops: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Cut the events into the loops' time windows, compare each loop's signatures with the first's."""
    from sensorium.pipeline.codec import CodecError, from_json

    parsed = []
    for e in events:
        try:
            parsed.append((e, from_json(json.dumps(e).encode())))
        except CodecError:
            continue
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    reference: Counter[tuple[Any, ...]] | None = None
    for lp in loops:
        inside = [(d, m) for d, m in parsed if lp["start"] <= d["time"] <= lp["end"]]
        sigs = Counter(s for _, m in inside if (s := soak_signature(m)) is not None)
        counts = Counter(d["type"] for d, _ in inside)
        unknown = Counter(
            f"{d['room']} {d['state']}" for d, _ in inside if d["type"] == "presence" and d["person"] == "unknown"
        )
        row: dict[str, Any] = {
            "loop": lp["loop"],
            "start": lp["start"],
            "end": lp["end"],
            "events": len(inside),
            "compared": sum(sigs.values()),
            "counts": dict(sorted(counts.items())),
            "unknown_presence": dict(sorted(unknown.items())),
            "accuracy": lp.get("accuracy", {}),
            "answers": lp.get("answers", {}),
            "stages": lp.get("stages", {}),
        }
        if reference is None:
            reference = sigs
            row["signatures"] = [list(s) for s in sorted(sigs.elements(), key=repr)]
            row["same"] = True
        else:
            missing, extra = reference - sigs, sigs - reference
            row["same"] = not missing and not extra
            if not row["same"]:
                row["missing"] = [list(s) for s in sorted(missing.elements(), key=repr)]
                row["extra"] = [list(s) for s in sorted(extra.elements(), key=repr)]
                problems.append(
                    f"loop {lp['loop']} differs from loop {loops[0]['loop']}: missing {row['missing']}, extra "
                    f"{row['extra']}"
                )
        rows.append(row)
    return rows, problems


def loops_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the loops did that is not compared (timing decides it): ranges over the loops."""
    if not rows:
        return {}

    def span(values: list[Any]) -> list[Any]:
        vals = [v for v in values if v is not None]
        return [min(vals), max(vals)] if vals else []

    answers: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        for kind, a in r.get("answers", {}).items():
            for key in ("p50_ms", "p95_ms"):
                if a.get(key) is not None:
                    answers.setdefault(kind, {}).setdefault(key, []).append(a[key])
    stages: dict[str, dict[str, int]] = {}
    for r in rows:
        for name, st in r.get("stages", {}).items():
            tot = stages.setdefault(name, {"dropped": 0, "violations": 0})
            tot["dropped"] += st.get("dropped", 0)
            tot["violations"] += st.get("violations", 0)
    return {
        "wake": Counter(r["accuracy"].get("wake") for r in rows),
        "wer": span([r["accuracy"].get("wer") for r in rows]),
        "speaker_accuracy": span([r["accuracy"].get("speaker") for r in rows]),
        "events": span([r["events"] for r in rows]),
        "detections": span([r["counts"].get("detections", 0) for r in rows]),
        "faces": span([r["counts"].get("face", 0) for r in rows]),
        "unknown_presence_events": span([sum(r["unknown_presence"].values()) for r in rows]),
        "answers_ms": {
            k: {"p50_median": statistics.median(v["p50_ms"]), "p95_max": max(v.get("p95_ms", [0.0]))}
            for k, v in sorted(answers.items())
            if v.get("p50_ms")
        },
        "stages": stages,
    }


# ---------------------------------------------------------------------------------------- publisher


def _accuracy_summary(acc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "wake" in acc:
        out["wake"] = f"{acc['wake']['hits']}/{acc['wake']['labelled']}, {acc['wake']['false_alarms']} false"
    if "transcripts" in acc:
        out["wer"] = acc["transcripts"]["wer"]
        out["heard"] = [r["heard"] for r in acc["transcripts"]["rows"]]
    if "speaker" in acc:
        out["speaker"] = acc["speaker"]["accuracy"]
    if "presence" in acc:
        out["presence"] = {r: [p["precision"], p["recall"]] for r, p in acc["presence"].items()}
    if "detections" in acc:
        out["count_exact"] = acc["detections"]["count_exact"]
    return out


async def publish_loops(
    address: str, session_path: Path, loops_file: Path, duration: float, settle: float, stages: list[str]
) -> int:
    """The replay publisher: once every stage reports, replay the session in real time until ``duration`` is
    up (only whole loops), one JSON line per loop in ``loops_file`` (its time window and its report)."""
    from sensorium.evaluation.replay import ReplayOptions, load, replay_hub
    from sensorium.evaluation.report import make_report
    from sensorium.pipeline.bus import Endpoints, Subscriber
    from sensorium.pipeline.messages import StageStats

    session = load(session_path)
    latest: dict[str, StageStats] = {}
    sub = Subscriber(Endpoints.from_address(address), ["stats/"])

    async def watch() -> None:
        while True:
            msg = await sub.recv()
            if isinstance(msg, StageStats):
                latest[msg.stage] = msg

    def write(entry: dict[str, Any]) -> None:
        with open(loops_file, "a") as f:
            f.write(json.dumps(entry) + "\n")

    watcher = asyncio.create_task(watch())
    try:
        ready_by = time.monotonic() + 600
        while set(stages) - set(latest):
            if time.monotonic() > ready_by:
                write({"error": f"stages {sorted(set(stages) - set(latest))} never reported"})
                return 1
            await asyncio.sleep(0.5)
        end_by = time.time() + duration
        write({"ready": time.time(), "until": end_by})
        expected = session.duration + settle + 5.0
        for k in itertools.count(1):
            if time.time() + expected > end_by:
                return 0
            before = {s: (st.inputs, st.dropped, st.violations) for s, st in latest.items()}
            start = time.time()
            result = await replay_hub(session, ReplayOptions(speed=1.0, settle=settle), address, name="soak-replay")
            end = time.time()
            expected = end - start
            report = make_report(result, session.labels)
            keep = ("count", "p50_ms", "p95_ms")
            write(
                {
                    "loop": k,
                    "start": start,
                    "end": end,
                    "accuracy": _accuracy_summary(report.get("accuracy", {})),
                    "answers": {n: {x: a.get(x) for x in keep} for n, a in report["answers"].items()},
                    "stages": {
                        s: {
                            "inputs": st.inputs - before.get(s, (0, 0, 0))[0],
                            "dropped": st.dropped - before.get(s, (0, 0, 0))[1],
                            "violations": st.violations - before.get(s, (0, 0, 0))[2],
                            "level": st.level,
                        }
                        for s, st in sorted(latest.items())
                    },
                }
            )
        return 0
    finally:
        watcher.cancel()
        sub.close()


# ---------------------------------------------------------------------------------------- the run


@dataclass
class SoakOptions:
    """One soak run."""

    duration: float
    """Seconds of replay loops (only whole loops run; models load before it starts)."""
    out: Path
    """Folder for the deployment, logs, data, events and results."""
    interval: float = 30.0
    """Seconds between samples of the processes."""
    transport: str = "ipc"
    """"ipc" (a socket folder) or "tcp" (loopback ports)."""
    event_log: int = EVENT_LOG
    """Events the hub keeps."""
    rss_limit: float = RSS_LIMIT_MIB_H
    """MiB per hour a process may grow over the last half."""
    fd_limit: float = FD_LIMIT_H
    """Descriptors per hour a process may grow over the last half."""
    split: bool = False
    """Each stage in a worker process of its own (to find which one grows)."""
    cache: Path = CACHE
    """Where the sample session is built (once)."""
    json_path: Path | None = None
    """Results file (default ``out/soak.json``)."""
    plot_path: Path | None = None
    """Plot file (default ``out/soak.png``)."""
    progress: Callable[[str], None] = field(default=lambda s: print(s, file=sys.stderr, flush=True))


def _address(opts: SoakOptions) -> str:
    if opts.transport == "tcp":
        return f"tcp://127.0.0.1:{free_tcp_base(host='127.0.0.1')}"
    sock_dir = opts.out.resolve() / "sockets"
    if len(str(sock_dir)) > 80:  # AF_UNIX paths are limited to 107 bytes
        sock_dir = Path(tempfile.mkdtemp(prefix="sensorium-soak-"))
    sock_dir.mkdir(parents=True, exist_ok=True)
    return f"ipc://{sock_dir}/hub"


def workers_of(split: bool) -> dict[str, list[str]]:
    """Every stage on one worker, or (``split``) each stage in a worker of its own, to find the one that grows."""
    return {f"{WORKER}-{s}": [s] for s in STAGES} if split else {WORKER: list(STAGES)}


def deployment_toml(
    data: Path,
    address: str,
    edges: dict[str, str],
    event_log: int,
    wav_dir: Path,
    workers: dict[str, list[str]],
    cameras: dict[str, str] | None = None,
) -> str:
    """The soak's deployment: the stages on CPU workers, one loudspeaker edge per microphone of the session, and
    a node per camera of the session (the replay publishes its frames; the hub lets only a room's nodes)."""
    lines = [
        f'data_dir = "{data}"',
        "[hub]",
        f'address = "{address}"',
        'heartbeat = "250ms"',
        'down_after = "3s"',
        f"event_log = {event_log}",
    ]
    for room in sorted(set(edges.values())):
        lines.append(f"[rooms.{room}]")
    for name, room in edges.items():
        lines += [
            f"[edges.{name}]",
            f'room = "{room}"',
            f'playback = {{ wav_dir = "{wav_dir}", rate = 22050 }}',
        ]
    for name, room in (cameras or {}).items():
        if name not in edges:
            lines += [f"[edges.{name}]", f'room = "{room}"']
    for name, stages in workers.items():
        lines += [f"[workers.{name}]", 'device = "cpu"', f"stages = {json.dumps(stages)}"]
    lines += [
        "[stages.presence]",
        f'left_after = "{LEFT_AFTER:g}s"',
        'present_every = "20s"',
    ]
    return "\n".join(lines) + "\n"


def _sample(procs: Processes, log_file: Path, client_file: Path, t0: float) -> dict[str, Any]:
    import psutil

    row: dict[str, Any] = {"t": round(time.monotonic() - t0, 2), "procs": {}}
    for name, popen in list(procs.procs.items()):
        try:
            top = psutil.Process(popen.pid)
            tree = [top, *top.children(recursive=True)]
            rss = fds = threads = 0
            for p in tree:
                with p.oneshot():
                    rss += p.memory_info().rss
                    fds += p.num_fds()
                    threads += p.num_threads()
        except psutil.Error:
            continue  # exited between the listing and the reading: the watchdog says so
        row["procs"][name] = [round(rss / 2**20, 2), fds, threads]
    raw = log_file.read_bytes() if log_file.exists() else b""
    row["event_log"] = [len(raw), raw.count(b"\n")]
    row["client_events"] = client_file.read_bytes().count(b"\n") if client_file.exists() else 0
    return row


def run_soak(opts: SoakOptions) -> dict[str, Any]:
    """Run the soak; the results (``ok``, ``problems``, samples, trends, loops) are also written as JSON."""
    from benchmarks.replay import enroll_sample
    from sensorium.evaluation.replay import load
    from sensorium.evaluation.sample import prepare

    say = opts.progress
    out = opts.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in ("loops.jsonl", "events.jsonl"):
        (out / old).unlink(missing_ok=True)
    data, wav_dir = out / "data", out / "tts"
    say(f"soak: preparing the sample session and its gallery in {out} …")
    if not (data / "gallery.db").exists():
        enroll_sample(data, opts.cache)  # loads each model once (the demo's enrolment loads them per file)
    session_path = Path(prepare(data, opts.cache)).resolve()
    session = load(session_path)
    one_loop = session.duration + SETTLE + 5.0
    if opts.duration < one_loop:
        raise ValueError(f"--duration {opts.duration:g}s is shorter than one loop of the sample (~{one_loop:.0f} s)")
    edges: dict[str, str] = {}
    cameras: dict[str, str] = {}
    for rec in session.items:
        kind, room, source = rec.topic.split("/", 2)
        if kind == "audio":
            edges.setdefault(source, room)
        elif kind == "video":
            cameras.setdefault(source, room)
    address = _address(opts)
    cfg = out / "deploy.toml"
    workers = workers_of(opts.split)
    cfg.write_text(deployment_toml(data, address, edges, opts.event_log, wav_dir, workers, cameras))
    loops_file, client_file = out / "loops.jsonl", out / "events.jsonl"
    argv = {
        "hub": [*SENSORIUM, "hub", "--config", str(cfg)],
        **{
            "worker" if len(workers) == 1 else f"worker-{w}": [*SENSORIUM, "worker", "--config", str(cfg), "--name", w]
            for w in workers
        },
        **{f"edge-{n}": [*SENSORIUM, "edge", "--config", str(cfg), "--name", n] for n in edges},
        "agent": [*SENSORIUM, "agent", "--config", str(cfg)],
        "client": [*SENSORIUM, "events", "--config", str(cfg), "--since", "0"],
        "publisher": [
            sys.executable,
            "-m",
            "benchmarks.soak",
            "publish",
            address,
            str(session_path),
            str(loops_file),
            "--duration",
            str(opts.duration),
            "--settle",
            str(SETTLE),
        ],
    }
    procs = Processes(out / "logs", argv, stdout={"client": client_file})
    from benchmarks.__main__ import machine

    results: dict[str, Any] = {
        "benchmark": "soak",
        "machine": machine(),
        "duration_s": opts.duration,
        "interval_s": opts.interval,
        "transport": opts.transport,
        "address": address,
        "stages": STAGES,
        "workers": workers,
        "event_log_capacity": opts.event_log,
        "session": {"name": session.name, "duration_s": round(session.duration, 2)},
        "limits": {"rss_mib_h": opts.rss_limit, "fds_h": opts.fd_limit, "significance_se": SIGNIFICANCE},
        "folder": str(out),
    }
    problems: list[str] = []
    samples: list[dict[str, Any]] = []
    json_path = opts.json_path or out / "soak.json"

    def keep_so_far() -> None:  # a run stopped midway keeps its samples
        so_far = {**results, "samples": samples, "partial": True}
        dump(json_path, so_far)
        checkpoint(so_far)

    t0 = time.monotonic()
    results["t0_wall"] = time.time()
    try:
        procs.start("hub")
        time.sleep(1.0)
        for name in argv:
            if name != "hub":
                procs.start(name)
        say(f"soak: {len(argv)} processes on {address}; loops for {opts.duration:.0f} s once the stages are up")
        next_sample = time.monotonic()
        loops_seen = 0
        while True:
            dead = procs.dead()
            if dead:
                done = dead.pop("publisher", None)
                if dead:
                    problems += [f"{n} exited with status {rc}:\n{procs.log_tail(n, 1500)}" for n, rc in dead.items()]
                    break
                if done is not None:
                    if done != 0:
                        problems.append(f"the replay publisher failed (status {done}):\n{procs.log_tail('publisher')}")
                    procs.procs.pop("publisher")
                    break
            if time.monotonic() >= next_sample:
                samples.append(_sample(procs, data / "hub" / "events.jsonl", client_file, t0))
                keep_so_far()
                next_sample += opts.interval
                n = sum(1 for e in _loops(loops_file) if "loop" in e)
                if n != loops_seen:
                    loops_seen = n
                    s = samples[-1]
                    say(
                        f"soak: {n} loops, {s['t']:.0f} s; RSS MiB "
                        + ", ".join(f"{k} {v[0]:.0f}" for k, v in s["procs"].items())
                    )
            time.sleep(0.25)
        time.sleep(2.0)  # the client writes the last events
        samples.append(_sample(procs, data / "hub" / "events.jsonl", client_file, t0))
    finally:
        stopped = procs.stop()
    results["exit_status"] = stopped
    loops = [e for e in _loops(loops_file) if "loop" in e]
    problems += [f"publisher: {e['error']}" for e in _loops(loops_file) if "error" in e]
    if not loops and not problems:
        problems.append("no whole loop ran (the publisher's log says why)")
    events = events_in(client_file)
    problems += stream_problems(events)
    rows, differ = per_loop(events, loops)
    problems += differ
    trends, growing = growth(samples, opts.rss_limit, opts.fd_limit)
    problems += growing
    results.update(
        wall_s=round(time.monotonic() - t0, 1),
        loops=rows,
        per_loop=loops_summary(rows),
        trends=trends,
        client={"events": len(events), "last_seq": events[-1]["seq"] if events else 0},
        samples=samples,
        problems=problems,
        ok=not problems,
    )
    dump(json_path, results)
    plot_path = opts.plot_path or out / "soak.png"
    try:
        plot(results, plot_path)
        results["plot"] = str(plot_path)
    except Exception as exc:  # the numbers matter more than the picture
        say(f"soak: plot failed: {exc}")
    dump(json_path, results)
    return results


def _loops(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


# ---------------------------------------------------------------------------------------- output


def plot(results: dict[str, Any], path: Path) -> Path:
    """RSS, RSS change, descriptors, threads and the event log over time; the judged half shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = results["samples"]
    names = sorted({n for s in samples for n in s["procs"]})
    half = last_half(samples)
    mid = half[0]["t"] / 60 if half else 0.0
    fig, axes = plt.subplots(5, 1, figsize=(10, 15), sharex=True)
    titles = ["RSS (MiB, log scale)", "RSS change in the judged half (MiB)", "open file descriptors", "threads"]
    judged: list[float] = []
    for name in names:
        pts = [(s["t"] / 60, s["procs"][name]) for s in samples if name in s["procs"]]
        ts = [t for t, _ in pts]
        axes[0].plot(ts, [v[0] for _, v in pts], label=name)
        late = [(t, v[0]) for t, v in pts if t >= mid]
        if late:
            judged += [v - late[0][1] for _, v in late]
            axes[1].plot([t for t, _ in late], [v - late[0][1] for _, v in late], label=name)
        axes[2].plot(ts, [v[1] for _, v in pts], label=name)
        axes[3].plot(ts, [v[2] for _, v in pts], label=name)
    axes[0].set_yscale("log")
    if judged:
        pad = max(1.0, 0.1 * (max(judged) - min(judged)))
        axes[1].set_ylim(min(judged) - pad, max(judged) + pad)
    for ax, title in zip(axes, titles, strict=False):
        ax.set_title(title)
    axes[4].plot([s["t"] / 60 for s in samples], [s["event_log"][0] / 1024 for s in samples], label="event log KiB")
    axes[4].set_title(f"hub event log (KiB; keeps {results['event_log_capacity']} events)")
    for ax in axes:
        ax.axvspan(mid, samples[-1]["t"] / 60 if samples else mid, color="0.92", zorder=0)
        ax.grid(alpha=0.3)
        for lp in results.get("loops", []):  # loop starts, on the samples' clock
            ax.axvline((lp["start"] - results["t0_wall"]) / 60, color="0.6", lw=0.6, ls=":", zorder=0)
    axes[0].legend(fontsize=7, ncol=4)
    axes[-1].set_xlabel("minutes (shaded: the half judged for growth)")
    verdict = "OK" if results.get("ok") else "FAILED"
    fig.suptitle(f"sensorium soak: {len(results.get('loops', []))} loops, {verdict}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def render(results: dict[str, Any]) -> str:
    """Markdown lines for the summary."""
    loops = results.get("loops", [])
    same = sum(1 for lp in loops if lp.get("same"))
    lines = [
        f"{len(loops)} loops of the sample session ({results['session']['duration_s']} s) through real processes "
        f"over {results['transport']} in {results['wall_s'] / 60:.1f} min; samples every {results['interval_s']:g} s; "
        f"{'OK' if results['ok'] else 'FAILED'}",
        f"events per loop identical to loop 1: {same}/{len(loops)} "
        f"({loops[0]['compared'] if loops else 0} compared: wake, final transcripts, speakers, named presence)",
        "",
        "| process | RSS MiB (mid → end) | RSS slope MiB/h (±SE; Theil–Sen) | fds | fd slope /h | threads |",
        "|---|---|---|---|---|---|",
    ]
    for name, tr in results.get("trends", {}).items():
        r, f, th = tr["rss_mib"], tr["fds"], tr["threads"]
        if r.get("slope_h") is None:
            continue
        lines.append(
            f"| {name} | {r['first']:.0f} → {r['last']:.0f} | {r['slope_h']:+.2f} (±{r['stderr_h']:.2f}; "
            f"{r['theil_sen_h']:+.2f}) | {f['first']:.0f} → {f['last']:.0f} | {f['slope_h']:+.2f} | "
            f"{th['first']:.0f} → {th['last']:.0f} |"
        )
    rest = results.get("per_loop") or {}
    if rest:
        wake = ", ".join(f"{k} in {v} loops" for k, v in rest["wake"].items())
        drops = sum(st["dropped"] for st in rest["stages"].values())
        viol = sum(st["violations"] for st in rest["stages"].values())
        lines += [
            "",
            f"per loop, not compared: wake {wake}; WER {rest['wer']}; speaker accuracy {rest['speaker_accuracy']}; "
            f"detections {rest['detections']}; unknown-people events {rest['unknown_presence_events']}",
            f"inputs dropped {drops}, budget violations {viol} over all loops (latency per loop: the JSON's loops)",
        ]
    if results.get("samples"):
        log = [s["event_log"][0] for s in results["samples"]]
        keeps = results["event_log_capacity"]
        lines.append(f"event log: {min(log) / 1024:.0f}–{max(log) / 1024:.0f} KiB (keeps {keeps} events)")
    for p in results.get("problems", []):
        lines.append(f"PROBLEM: {p.splitlines()[0]}")
    return "\n".join(lines)


def run(quick: bool = False) -> dict[str, Any]:
    """The benchmark: an hour of loops (``quick``: 3 minutes), plot next to the JSON in ``benchmarks/results``."""
    duration = 180.0 if quick else 3600.0
    with tempfile.TemporaryDirectory(prefix="sensorium-soak-") as tmp:
        opts = SoakOptions(
            duration=duration,
            out=Path(tmp),
            interval=10.0 if quick else 30.0,
            plot_path=RESULTS / "soak.png",
            json_path=Path(tmp) / "soak.json",
        )
        results = run_soak(opts)
    return results  # a failed soak keeps its numbers; render() says FAILED and why


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The soak's options (``python -m benchmarks.soak --duration 1h``)."""
    p.add_argument("--duration", default="1h", help="how long to loop, e.g. 3m, 1h (default 1h; whole loops only)")
    p.add_argument("--interval", default="30s", help="time between samples of the processes (default 30s)")
    p.add_argument("--dir", type=Path, default=Path(".sensorium-soak"), help="folder for logs and data")
    add_out(p, None, "DIR/soak.json")
    p.add_argument("--plot", type=Path, help="plot file (default: DIR/soak.png)")
    p.add_argument("--tcp", action="store_true", help="loopback tcp instead of ipc sockets")
    p.add_argument(
        "--worker-per-stage", action="store_true", help="each stage in a worker of its own (which one grows?)"
    )
    p.add_argument("--event-log", type=int, default=1000, help="events the hub keeps (default 1000, ~7 loops)")
    p.add_argument("--rss-limit", type=float, default=1.0, help="MiB/h a process may grow (default 1)")
    p.add_argument("--fd-limit", type=float, default=2.0, help="descriptors/h a process may grow (default 2)")


def soak_command(args: argparse.Namespace) -> int:
    """Exit codes: 0 flat and identical; 1 a process kept growing over the last half of the run, a loop's
    events differ, the client's stream has a gap or duplicate, or a process died; 2 bad arguments."""
    from sensorium.pipeline.config import ConfigError, parse_duration

    def fail(text: str) -> int:
        print(f"soak: {text}", file=sys.stderr)
        return 2

    try:
        duration = parse_duration(args.duration, "--duration")
        interval = parse_duration(args.interval, "--interval")
    except ConfigError as exc:
        return fail(str(exc))
    if interval <= 0 or interval > duration / 10:
        return fail(f"--interval {args.interval} leaves fewer than 5 samples in the judged half of {args.duration}")
    if args.event_log < 100:
        return fail(f"--event-log {args.event_log}: keep at least 100 events")
    try:
        import psutil  # noqa: F401
    except ImportError as exc:
        return fail(f"{exc}: the soak needs the dev tools (psutil)")
    opts = SoakOptions(
        duration=duration,
        out=args.dir,
        interval=interval,
        transport="tcp" if args.tcp else "ipc",
        split=args.worker_per_stage,
        event_log=args.event_log,
        rss_limit=args.rss_limit,
        fd_limit=args.fd_limit,
        json_path=args.out,
        plot_path=args.plot,
    )
    try:
        results = run_soak(opts)
    except ValueError as exc:
        return fail(str(exc))
    print(render(results))
    print(f"results in {opts.json_path or opts.out / 'soak.json'}, plot in {results.get('plot', '-')}")
    return 0 if results["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["publish"]:  # the helper process the run starts
        ap = argparse.ArgumentParser(prog="python -m benchmarks.soak publish")
        ap.add_argument("cmd")
        ap.add_argument("address")
        ap.add_argument("session", type=Path)
        ap.add_argument("loops_file", type=Path)
        ap.add_argument("--duration", type=float, required=True)
        ap.add_argument("--settle", type=float, default=SETTLE)
        ap.add_argument("--stages", default=",".join(STAGES))
        pa = ap.parse_args(argv)
        return asyncio.run(
            publish_loops(pa.address, pa.session, pa.loops_file, pa.duration, pa.settle, pa.stages.split(","))
        )
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description=__doc__.splitlines()[0],
        epilog="examples: python -m benchmarks.soak --duration 1h; "
        "python -m benchmarks.soak --duration 15m --interval 10s --dir soak-run --tcp",
    )
    add_arguments(ap)
    return soak_command(ap.parse_args(argv))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
