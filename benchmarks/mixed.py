"""Mixed load: does voice keep its budget while vision shares the cores, and is the first command as fast
as the rest?

Real processes started from the CLI as a user starts them, from a generated deployment file: ``sensorium
hub``; ``sensorium worker`` with all eight stages on the CPU (it prints its ready line once every stage is
loaded and warm, and only then do the edges start); ``sensorium agent`` answering; one ``sensorium edge``
per camera playing the generated walking-people clip in a loop at 5 fps (``benchmarks/vision_media.py``);
and the kitchen's ``sensorium edge --wav session.wav --once`` playing a voice session of "hey jarvis,
<command>" utterances (``benchmarks/voice_media.py``: Piper joe and flite voices, exact end-of-wake and
end-of-speech times). Two voices are enrolled with ``sensorium enroll`` (joe: Piper's joe, also at
1.15× speed; sally: flite slt); the others must come out "unknown".

Runs, each with fresh processes: voice only, 1 camera, 2 cameras (``--cameras``), then ``--restarts``
more voice-only runs of two utterances, so that the first utterance after a worker starts is measured
more than three times. Per run, from the reasoning loop's side (a ``pipeline.client.Client`` on the hub's
event stream, arrival on the hub clock):

- wake: end of "hey jarvis" in the audio → the wake event;
- end of speech → final transcript, and → speaker event; endpoint (the final's ``t1``, after the silence that
  ended the command) → speaker event, what the speaker stage's 500 ms budget counts;
- the finals of enrolled voices that carry the speaker (and the right one);
- the worker's event-loop lag p99 (``sensorium_loop_lag_seconds``, from its metrics endpoint over the
  session), its CPU by thread group (``sensorium_thread_cpu_seconds_total``), budget violations per stage;
- vision frames dropped: frames the detect stage dropped (late or superseded) / frames it was offered.

First utterance vs steady state: the first utterance of every run (a worker that just said it is ready)
against all later ones.

Goals (one camera): speaker p95 within its 500 ms budget (endpoint → speaker event), the speaker on
>= 95 % of finals of enrolled voices, loop lag p99 < 50 ms, wake and end of speech → final p95 within
20 % of the voice-only run; the first utterance's p95 within 20 % of the steady state's.

Run: ``.venv/bin/python -m benchmarks.mixed [--quick] [--utterances N] [--cameras 0,1,2] [--restarts K]
[--out FILE]``; prints a table and writes ``benchmarks/results/mixed.json`` (after every run, so a run cut
short keeps what it measured). ``run(quick=False) -> dict`` is the module API; ``--quick`` (CI-sized) is
voice only and one camera, four utterances each, no extra restarts. ``SENSORIUM_MIXED_DIR`` keeps the
run folders (deployment files, every process's log) there instead of a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.outfile import add_out, checkpoint, write_results
from benchmarks.processes import SENSORIUM, Processes
from sensorium.evaluation.ports import free_port, free_tcp_base

RESULTS = Path(__file__).resolve().parent / "results" / "mixed.json"
STAGES = ["wake", "arbiter", "stt", "speaker", "detect", "face", "presence", "tts"]
ROOM = "kitchen"
MIC = "kitchen-pi"
PEOPLE = {"joe": "piper:joe", "sally": "flite:slt"}
"""Enrolled people and the voice each is enrolled from (one sentence that is no benchmark command)."""
ENROL_TEXT = "the quick brown fox jumps over the lazy dog while the kettle boils in the kitchen"
READY_TIMEOUT = 300.0
TABLE_KEYS = (
    "cameras",
    "wake_ms",
    "eos_final_ms",
    "eos_speaker_ms",
    "endpoint_speaker_ms",
    "speaker_on_final_pct",
    "right_speaker_on_final_pct",
    "loop_lag_p99_ms",
    "frames_dropped_pct",
    "load_avg",
)


def who(voice: str) -> str:
    """The name an utterance in ``voice`` should get: an enrolled person (at any speaking rate) or unknown."""
    for name, enrolled in PEOPLE.items():
        if voice == enrolled or voice.startswith(enrolled + ":"):
            return name
    return "unknown"


def pct(values: list[float]) -> dict[str, float | int | None]:
    """p50/p95 (nearest rank) and n of ``values`` (ms)."""
    from sensorium.pipeline.metrics import summary

    return summary(values, digits=1)


# ------------------------------------------------------------------------------------------ metrics


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The worker's Prometheus metrics: name → {labels: value}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
        if not m:
            continue
        labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(3) or "")))
        out.setdefault(m.group(1), {})[labels] = float(m.group(4))
    return out


def _diff(a: dict, b: dict, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    before = a.get(name, {})
    return {k: v - before.get(k, 0.0) for k, v in b.get(name, {}).items()}


def histogram_quantile(buckets: dict[float, float], q: float) -> float | None:
    """Prometheus' histogram_quantile: linear inside the bucket that holds the q-th sample."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    target = q * buckets[bounds[-1]]
    lo, below = 0.0, 0.0
    for b in bounds:
        if buckets[b] >= target:
            if math.isinf(b):
                return lo
            return lo + (b - lo) * (target - below) / max(buckets[b] - below, 1e-12)
        lo, below = b, buckets[b]
    return lo


def _worst(buckets: dict[float, float]) -> float | None:
    """The bound of the smallest bucket that holds every sample (ms): the longest lag was at most this."""
    total = max(buckets.values(), default=0.0)
    if total <= 0:
        return None
    bound = min(b for b, n in buckets.items() if n >= total)
    return None if math.isinf(bound) else 1000 * bound


def worker_numbers(before: dict, after: dict, wall: float) -> dict[str, Any]:
    """Loop lag p99, CPU by thread group, detect's dropped share, violations per stage, over the session."""
    lag = {
        float("inf") if dict(k)["le"] == "+Inf" else float(dict(k)["le"]): v
        for k, v in _diff(before, after, "sensorium_loop_lag_seconds_bucket").items()
    }
    p99 = histogram_quantile(lag, 0.99)
    cpu = {
        dict(k)["thread"]: round(100 * v / wall, 1)
        for k, v in _diff(before, after, "sensorium_thread_cpu_seconds_total").items()
    }
    inputs = {dict(k)["stage"]: v for k, v in _diff(before, after, "sensorium_stage_inputs_total").items()}
    dropped = {dict(k)["stage"]: v for k, v in _diff(before, after, "sensorium_stage_dropped_total").items()}
    viol = {
        dict(k)["stage"]: int(v)
        for k, v in _diff(before, after, "sensorium_stage_budget_violations_total").items()
        if v
    }
    offered = inputs.get("detect", 0.0) + dropped.get("detect", 0.0)
    return {
        "loop_lag_p99_ms": round(1000 * p99, 1) if p99 is not None else None,
        "loop_lag_max_ms_at_most": _worst(lag),
        "cpu_pct": dict(sorted(cpu.items(), key=lambda kv: -kv[1])),
        "frames_offered": int(offered),
        "frames_dropped_pct": round(100 * dropped.get("detect", 0.0) / offered, 1) if offered else None,
        "violations": viol,
    }


# --------------------------------------------------------------------------------------------- media


def media(folder: Path, utterances: int, camera_seconds: float) -> dict[str, Any]:
    """The voice session, the enrolment WAVs and the camera clip (cached where the generators cache)."""
    from benchmarks import vision_media
    from benchmarks.voice_media import build_session, synthesize, write_wav

    session = build_session(utterances)
    enrol = {}
    for name, voice in PEOPLE.items():
        path = folder / f"enrol-{name}.wav"
        write_wav(path, synthesize(ENROL_TEXT, voice))
        enrol[name] = path
    clip = vision_media.write_video(folder / "clip.avi", seconds=camera_seconds)
    gallery = folder / "gallery.db"
    for name, wav in enrol.items():  # as a user enrols: the CLI, one WAV per person
        if gallery.exists() and name in _people(gallery):
            continue
        argv = [*SENSORIUM, "enroll", name, "--voice", str(wav), "--gallery", str(gallery)]
        procs = Processes(folder / "logs", {"enroll": argv})
        if procs.start("enroll").wait(300) != 0:
            raise RuntimeError("sensorium enroll failed\n" + procs.logs())
    return {"session": session, "gallery": gallery, "clip": clip}


def _people(gallery: Path) -> set[str]:
    from sensorium.models.gallery import Gallery

    with Gallery(gallery) as g:
        return set(g.people())


def deployment(folder: Path, cameras: int, clip: Path, port: int, metrics_port: int) -> Path:
    """The deployment file: one room with the microphone, ``cameras`` camera edges, one worker with everything."""
    lines = [
        f'data_dir = "{folder / "data"}"',
        "",
        "[hub]",
        f'address = "tcp://127.0.0.1:{port}"',
        'heartbeat = "500ms"',
        "",
        f"[rooms.{ROOM}]",
        *(["[rooms.living_room]"] if cameras else []),
        "",
        f"[edges.{MIC}]",
        f'room = "{ROOM}"',
        "microphone = { block_ms = 80 }",
    ]  # no loudspeaker: the agent's answers are synthesized, but never heard by the next command's wake word
    for c in range(1, cameras + 1):
        lines += [
            "",
            f"[edges.cam-{c}]",
            'room = "living_room"',
            f'cameras = {{ cam{c} = {{ source = "{clip}", fps = 5 }} }}',
        ]
    lines += [
        "",
        "[workers.box]",
        f"stages = {json.dumps(STAGES)}",
        f"metrics_port = {metrics_port}",
    ]
    path = folder / "deploy.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------------ runs


async def _observe(address: str, session: Any, procs: Processes, metrics_port: int) -> dict[str, Any]:
    """Play the session through the running deployment; the events and the worker's numbers over it."""
    from sensorium.pipeline.bus import Endpoints, Subscriber
    from sensorium.pipeline.client import Client

    endpoints = Endpoints.from_address(address)
    events: list[tuple[float, Any]] = []
    async with Client(endpoints) as client:
        if not await client.wait_connected(15.0):
            raise RuntimeError("the hub did not answer")

        async def listen() -> None:
            async for ev in client.events(["wake", "transcript", "speaker"]):
                events.append((time.time(), ev))

        listener = asyncio.create_task(listen())
        utterances = Subscriber(endpoints, [f"utterance/{ROOM}/"])  # the bus itself: partials are not events

        async def listen_utterances() -> None:
            while True:
                u = await utterances.recv()
                events.append((time.time(), u))

        bus = asyncio.create_task(listen_utterances())
        first = Subscriber(endpoints, [f"audio/{ROOM}/{MIC}"])
        await asyncio.sleep(0.5)
        before = scrape(metrics_port)
        t_before = time.monotonic()
        procs.start("mic")
        msg = await first.recv_timeout(30.0)
        first.close()
        if msg is None:
            raise RuntimeError("the kitchen's edge sent no audio\n" + procs.logs())
        start = msg.time
        deadline = time.monotonic() + session.duration + 20.0
        last = start + session.utterances[-1].command_start
        while time.monotonic() < deadline:
            if any(getattr(e, "final", False) and e.t1 >= last for _, e in events):
                await asyncio.sleep(1.0)  # its speaker event
                break
            await asyncio.sleep(0.1)
        after = scrape(metrics_port)
        numbers = worker_numbers(before, after, time.monotonic() - t_before)
        for task in (listener, bus):
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        utterances.close()
    return {"start": start, "events": events, "worker": numbers}


def rows_of(session: Any, start: float, events: list[tuple[float, Any]]) -> list[dict[str, Any]]:
    """One row per utterance: wake, end of speech → final and → speaker, the speaker the final carried."""
    from sensorium.pipeline.messages import SpeakerIdentified, Transcript, Utterance, WakeDetected

    rows = []
    for i, u in enumerate(session.utterances):
        lo = start + (session.utterances[i - 1].window_end if i else 0.0)
        hi = start + u.window_end
        wakes = [a for a, e in events if isinstance(e, WakeDetected) and lo <= e.time < hi]
        finals = [(a, e) for a, e in events if isinstance(e, Transcript) and e.final and e.text and lo <= e.t1 < hi]
        row: dict[str, Any] = {
            "utterance": u.name,
            "voice": u.voice,
            "expected": who(u.voice),
            "wake_ms": 1000 * (wakes[0] - (start + u.wake_end)) if wakes else None,
            "eos_final_ms": None,
            "eos_speaker_ms": None,
            "final_speaker": None,
            "speaker": None,
        }
        if finals:
            a, tr = finals[0]
            row["eos_final_ms"] = 1000 * (a - (start + u.speech_end))
            row["final_speaker"] = tr.speaker
            row["text"] = tr.text
            spk = [
                (sa, se)
                for sa, se in events
                if isinstance(se, SpeakerIdentified) and se.utterance_id == tr.utterance_id
            ]
            row["endpoint_ms"] = 1000 * (tr.t1 - (start + u.speech_end))  # the silence that ended it
            if spk:
                row["eos_speaker_ms"] = 1000 * (spk[0][0] - (start + u.speech_end))
                row["endpoint_speaker_ms"] = 1000 * (spk[0][0] - tr.t1)  # what the speaker stage's budget counts
                row["speaker"] = spk[0][1].person
                row["speaker_score"] = round(spk[0][1].score, 3)
            mine = [(a, e) for a, e in events if isinstance(e, Utterance) and e.utterance_id == tr.utterance_id]
            row["partials"] = sum(e.partial for _, e in mine)
            row["covered"] = any(e.covered for _, e in mine if not e.partial)
        rows.append(row)
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Percentiles and rates over utterance rows."""
    enrolled = [r for r in rows if r["expected"] != "unknown" and r["eos_final_ms"] is not None]
    return {
        "utterances": len(rows),
        "finals": sum(r["eos_final_ms"] is not None for r in rows),
        "wake_ms": pct([r["wake_ms"] for r in rows]),
        "eos_final_ms": pct([r["eos_final_ms"] for r in rows]),
        "eos_speaker_ms": pct([r["eos_speaker_ms"] for r in rows]),
        "endpoint_speaker_ms": pct([r.get("endpoint_speaker_ms") for r in rows]),
        "enrolled_finals": len(enrolled),
        "speaker_on_final_pct": round(100 * sum(r["final_speaker"] is not None for r in enrolled) / len(enrolled), 1)
        if enrolled
        else None,
        "right_speaker_on_final_pct": round(
            100 * sum(r["final_speaker"] == r["expected"] for r in enrolled) / len(enrolled), 1
        )
        if enrolled
        else None,
    }


def one_run(folder: Path, cameras: int, m: dict[str, Any], session: Any) -> dict[str, Any]:
    """Fresh processes, ``cameras`` camera edges, one voice session; the run's rows and numbers."""
    port = free_tcp_base(host="127.0.0.1")  # below the ephemeral range free_port picks from: never the same
    metrics_port = free_port()
    run_dir = folder / f"run-{cameras}cam-{time.monotonic_ns()}"
    (run_dir / "data").mkdir(parents=True)
    data = run_dir / "data"
    dep = deployment(run_dir, cameras, m["clip"], port, metrics_port)
    cfg = str(dep)
    shutil.copy(m["gallery"], data / "gallery.db")
    argv = {
        "hub": [*SENSORIUM, "hub", "--config", cfg],
        "worker": [*SENSORIUM, "-v", "worker", "--config", cfg, "--name", "box"],
        "agent": [*SENSORIUM, "agent", "--config", cfg],
        "mic": [*SENSORIUM, "edge", "--config", cfg, "--name", MIC, "--wav", str(session.path), "--once"],
        **{
            f"cam-{c}": [*SENSORIUM, "edge", "--config", cfg, "--name", f"cam-{c}", "--loop"]
            for c in range(1, cameras + 1)
        },
    }
    procs = Processes(run_dir / "logs", argv)
    try:
        procs.start("hub")
        t0 = time.monotonic()
        procs.start("worker")
        while "ready:" not in procs.log_tail("worker", 100_000):
            if procs.dead():
                raise RuntimeError(f"a process exited: {procs.dead()}\n" + procs.logs())
            if time.monotonic() - t0 > READY_TIMEOUT:
                raise RuntimeError("the worker did not say it is ready\n" + procs.logs())
            time.sleep(0.2)
        ready_s = time.monotonic() - t0
        ready_line = next(ln for ln in procs.log_tail("worker", 100_000).splitlines() if "ready:" in ln)
        procs.start("agent")
        for c in range(1, cameras + 1):
            procs.start(f"cam-{c}")
        time.sleep(3.0 if cameras else 1.0)  # the cameras' frames are flowing before anyone speaks
        got = asyncio.run(_observe(f"tcp://127.0.0.1:{port}", session, procs, metrics_port))
    finally:
        procs.stop()
    rows = rows_of(session, got["start"], got["events"])
    return {
        "cameras": cameras,
        "ready_s": round(ready_s, 1),
        "ready_line": ready_line.strip(),
        "load_avg": os.getloadavg()[0],
        **summarize(rows),
        **got["worker"],
        "rows": rows,
    }


def run(
    quick: bool = False,
    utterances: int | None = None,
    cameras: tuple[int, ...] | None = None,
    restarts: int | None = None,
) -> dict[str, Any]:
    """The runs (voice only and with cameras), then the first-utterance restarts; each written as it ends."""
    n = utterances or (4 if quick else 12)
    cams = cameras if cameras is not None else ((0, 1) if quick else (0, 1, 2))
    extra = restarts if restarts is not None else (0 if quick else 3)
    result: dict[str, Any] = {"quick": quick, "utterances": n, "load_avg_start": os.getloadavg()[0], "runs": []}
    with tempfile.TemporaryDirectory(prefix="sensorium-mixed-") as tmp:
        folder = Path(os.environ.get("SENSORIUM_MIXED_DIR") or tmp)
        # numba's cache, as under a data dir that persists: each run's fresh data dir must not make the
        # worker compile librosa's helpers again (what a user's first start pays once).
        os.environ.setdefault("NUMBA_CACHE_DIR", str(folder / "numba"))
        session = None
        m = media(folder, n, 30.0)
        session = m["session"]
        short = media(folder, 2, 30.0)["session"] if extra else None
        for c in cams:
            print(f"mixed: {c} camera(s), {n} utterances …", file=sys.stderr, flush=True)
            result["runs"].append(one_run(folder, c, m, session))
            _finish(result)
            checkpoint(result)
        for k in range(extra):
            print(f"mixed: restart {k + 1}/{extra} (voice only, 2 utterances) …", file=sys.stderr, flush=True)
            result["runs"].append({**one_run(folder, 0, m, short), "restart": True})
            _finish(result)
            checkpoint(result)
    return result


def _finish(result: dict[str, Any]) -> None:
    """The comparisons: each camera count against voice only; first utterance against the steady state."""
    runs = result["runs"]
    base = next((r for r in runs if r["cameras"] == 0 and not r.get("restart")), None)
    table = []
    for r in runs:
        if r.get("restart"):
            continue
        row = {k: r[k] for k in TABLE_KEYS}
        if base is not None and r is not base:
            for key in ("wake_ms", "eos_final_ms"):
                b, v = base[key]["p95"], r[key]["p95"]
                row[f"{key}_p95_vs_voice_only"] = round(v / b, 2) if b and v is not None and b > 0 else None
        table.append(row)
    result["table"] = table
    first = [r["rows"][0] for r in runs if r["rows"]]
    steady = [row for r in runs for row in r["rows"][1:]]
    result["first_vs_steady"] = {
        "first": summarize(first),
        "steady": summarize(steady),
    }
    f, s = result["first_vs_steady"]["first"], result["first_vs_steady"]["steady"]
    for key in ("eos_final_ms", "eos_speaker_ms", "endpoint_speaker_ms"):
        a, b = f[key]["p95"], s[key]["p95"]
        result["first_vs_steady"][f"{key}_p95_ratio"] = round(a / b, 2) if a is not None and b else None
    one = next((r for r in table if r["cameras"] == 1), None)
    if one is not None:
        result["goals_one_camera"] = {
            "speaker_p95_within_500ms": (one["endpoint_speaker_ms"]["p95"] or 1e9) <= 500,
            "speaker_on_95pct_of_enrolled_finals": (one["speaker_on_final_pct"] or 0) >= 95,
            "loop_lag_p99_under_50ms": (one["loop_lag_p99_ms"] if one["loop_lag_p99_ms"] is not None else 1e9) < 50,
            "wake_p95_within_20pct": (one.get("wake_ms_p95_vs_voice_only") or 9) <= 1.2,
            "eos_final_p95_within_20pct": (one.get("eos_final_ms_p95_vs_voice_only") or 9) <= 1.2,
        }


def _ms(d: dict[str, Any] | None) -> str:
    if not d or d.get("p50") is None:
        return "-"
    return f"{d['p50']:.0f}/{d['p95']:.0f}"


def render(result: dict[str, Any]) -> str:
    """The mixed table, first vs steady, and the goals."""
    lines = [
        "cameras | wake p50/p95 ms | eos→final p50/p95 | eos→speaker p50/p95 | endpoint→speaker | "
        "speaker on final (right) | loop lag p99 ms | frames dropped | load",
    ]
    for r in result.get("table", []):
        dropped = "-" if r["frames_dropped_pct"] is None else f"{r['frames_dropped_pct']} %"
        lines.append(
            f"{r['cameras']:>7} | {_ms(r['wake_ms']):>15} | {_ms(r['eos_final_ms']):>17} | "
            f"{_ms(r['eos_speaker_ms']):>19} | {_ms(r['endpoint_speaker_ms']):>16} | "
            f"{r['speaker_on_final_pct']!s:>6} % ({r['right_speaker_on_final_pct']!s} %) | "
            f"{r['loop_lag_p99_ms']!s:>15} | {dropped:>8} | {r['load_avg']:.2f}"
        )
    fs = result.get("first_vs_steady")
    if fs:
        f, s = fs["first"], fs["steady"]
        lines.append("")
        lines.append(
            f"first utterance after a worker starts (n={f['eos_final_ms']['n']}): eos→final {_ms(f['eos_final_ms'])}, "
            f"eos→speaker {_ms(f['eos_speaker_ms'])}, endpoint→speaker {_ms(f['endpoint_speaker_ms'])}, "
            f"speaker on final {f['speaker_on_final_pct']} %"
        )
        lines.append(
            f"steady state (n={s['eos_final_ms']['n']}): eos→final {_ms(s['eos_final_ms'])}, "
            f"eos→speaker {_ms(s['eos_speaker_ms'])}, endpoint→speaker {_ms(s['endpoint_speaker_ms'])}, "
            f"speaker on final {s['speaker_on_final_pct']} %"
        )
        lines.append(
            f"first/steady p95: eos→final {fs['eos_final_ms_p95_ratio']}, eos→speaker {fs['eos_speaker_ms_p95_ratio']}"
        )
    if result.get("goals_one_camera"):
        lines.append("")
        lines.append(
            "goals (1 camera): "
            + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in result["goals_one_camera"].items())
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.mixed", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized: voice only and one camera, 4 utterances")
    ap.add_argument("--utterances", type=int, help="utterances per run (default 12; quick 4)")
    ap.add_argument("--cameras", help="comma-separated camera counts (default 0,1,2)")
    ap.add_argument("--restarts", type=int, help="extra voice-only runs for the first utterance (default 3)")
    add_out(ap, RESULTS)
    args = ap.parse_args(argv)
    cams = tuple(int(c) for c in args.cameras.split(",")) if args.cameras else None
    result = write_results(args.out, lambda: run(args.quick, args.utterances, cams, args.restarts))
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
