"""Takeover and drain of a replicated stage with real processes, at the default heartbeat settings.

Two `sensorium worker` processes run `stt` (faster-whisper tiny.en on the CPU): "big" prefers it,
"small" stands by (and runs the wake stage). Piper speaks "hey jarvis, <command>" every few seconds
in real time. Each kill round waits for a wake word, lets the command run 0.2-1.2 s, SIGKILLs "big",
and measures SIGKILL → the first transcript event from "small" (what the user's assistant sees next)
and SIGKILL → the hub's ``placement`` event; then "big" restarts and gets the room back at an utterance
boundary after ``handback_after``. Each drain round drains "big" mid-command and measures the time
until it serves nothing (``sensorium placement drain --until-idle``), then undrains it.

Every wake word must end in exactly one final transcript (matched by time span): lost and duplicated
utterances are counted over the whole run. Hub heartbeat 500 ms, takeover_after 1 s (defaults);
handback_after 2 s to keep rounds short (it does not affect takeover). Results:
``benchmarks/results/failover.json``. On a shared 2-core machine the numbers are indicative only.

  python -m benchmarks.failover [--kills 20] [--drains 5] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "failover.json"

from benchmarks.outfile import add_out  # noqa: E402  (after the path set-up above)

COMMANDS = [
    "turn on the kitchen lights",
    "what time is it",
    "set a timer for ten minutes",
    "please remind me to call my mother tomorrow at noon",
    "play some music in the living room",
]


def _config(tmp: Path) -> Path:
    cfg = tmp / "deploy.toml"
    cfg.write_text(
        f'data_dir = "{tmp}/data"\n'
        f'[hub]\naddress = "ipc://{tmp}/hub"\nhandback_after = "2s"\n'  # heartbeat, takeover_after: defaults
        '[rooms.kitchen]\n[edges.kitchen-pi]\nroom = "kitchen"\nmicrophone = { block_ms = 80 }\n'
        '[workers.big]\nstages = ["stt"]\n'
        '[workers.small]\nstages = ["wake"]\nstandby = ["stt"]\n'
        '[stages.wake]\nbudget = "2s"\n[stages.stt]\nbudget = "5s"\nspeaker_wait = "0s"\n'
    )
    return cfg


def _worker(cfg: Path, name: str, logs: Path) -> subprocess.Popen[bytes]:
    with open(logs / f"{name}.log", "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "sensorium", "worker", "--config", str(cfg), "--name", name],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def _pct(xs: list[float]) -> dict[str, float | int | None]:
    from sensorium.pipeline.metrics import summary

    return summary(xs, extra=("max",)) if xs else {}


async def _bench(kills: int, drains: int) -> dict[str, Any]:
    from sensorium.deployment import load_deployment, placement_specs
    from sensorium.evaluation import media
    from sensorium.pipeline.bus import Publisher, Subscriber
    from sensorium.pipeline.client import Client
    from sensorium.pipeline.hub import Hub
    from sensorium.pipeline.messages import AudioChunk, Placement, StageStats, Transcript, WakeDetected

    cache = ROOT / ".cache" / "media"
    speech = [media.speech(f"hey jarvis, {c}", "piper:joe", cache) for c in COMMANDS]
    tmp = Path(tempfile.mkdtemp(prefix="failover-bench-"))
    (tmp / "logs").mkdir()
    cfg = _config(tmp)
    dep = load_deployment(cfg)
    hub = Hub(dep.hub, state_dir=tmp / "state", placement=placement_specs(dep))
    await hub.start()
    pub = Publisher(hub.endpoints)
    sub = Subscriber(hub.endpoints, ["transcript/", "wake/", "placement/", "stats/"])
    procs = {n: _worker(cfg, n, tmp / "logs") for n in ("big", "small")}
    stop = asyncio.Event()
    arrivals: list[tuple[float, Any]] = []  # (monotonic arrival, message)
    actions: list[tuple[float, str]] = []  # (monotonic, what the benchmark did): to explain duplicates
    ready: set[str] = set()

    async def listen() -> None:
        while True:
            msg = await sub.recv()
            if isinstance(msg, StageStats):
                ready.add(msg.source)
            else:
                arrivals.append((time.monotonic(), msg))

    async def speak() -> None:
        block, t, t_wall, k = 1280, hub.clock.now(), time.monotonic(), 0
        while not stop.is_set():
            pcm = media_concat(speech[k % len(speech)], 2.5)
            k += 1
            for i in range(0, len(pcm) - block + 1, block):
                if stop.is_set():
                    return
                chunk = pcm[i : i + block].tobytes()
                await pub.publish(AudioChunk(room="kitchen", source="kitchen-pi", time=t, data=chunk))
                t += block / 16000
                t_wall += block / 16000
                await asyncio.sleep(max(0.0, t_wall - time.monotonic()))

    async def until(check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)

    async def big_serving() -> None:
        ready.discard("big")
        await until(lambda: "big" in ready and hub.assignments.get(("stt", "kitchen")) == "big", 120, "big serving")

    async def next_wake() -> WakeDetected:
        n = len(arrivals)
        await until(lambda: any(isinstance(m, WakeDetected) for _, m in arrivals[n:]), 30, "a wake word")
        return next(m for _, m in arrivals[n:] if isinstance(m, WakeDetected))

    takeover, placement_s, drain_idle = [], [], []
    listener = asyncio.create_task(listen())
    speaker = None
    try:
        await until(lambda: {"big", "small"} <= ready, 180, "workers loaded")
        await until(lambda: hub.assignments.get(("stt", "kitchen")) == "big", 30, "the table")
        speaker = asyncio.create_task(speak())
        for i in range(kills):
            wake = await next_wake()
            await asyncio.sleep(random.uniform(0.2, 0.8))
            n = len(arrivals)
            _kill(procs["big"])
            t_kill = time.monotonic()
            actions.append((t_kill, f"kill {i + 1}"))
            done = [m for _, m in arrivals[:n] if isinstance(m, Transcript) and m.final]
            mid = not any(m.t0 - 0.01 <= wake.time <= m.t1 + 0.01 for m in done)

            def standby_answered(n: int = n) -> bool:
                after = [m for _, m in arrivals[n:]]
                return any(isinstance(m, Transcript) and m.source == "small" for m in after) and any(
                    isinstance(m, Placement) for m in after
                )

            await until(standby_answered, 30, "the standby's first transcript")
            first = next(t for t, m in arrivals[n:] if isinstance(m, Transcript) and m.source == "small")
            moved = next(t for t, m in arrivals[n:] if isinstance(m, Placement))
            placement_s.append(moved - t_kill)
            if mid:  # the command was still being spoken or decoded: its transcript comes from the standby
                takeover.append(first - t_kill)
            print(
                f"kill {i + 1}/{kills}: {'mid-command' if mid else 'after the final'}, first standby transcript "
                f"{first - t_kill:.2f} s, placement {moved - t_kill:.2f} s"
            )
            procs["big"] = _worker(cfg, "big", tmp / "logs")
            actions.append((time.monotonic(), f"restart {i + 1}"))
            await big_serving()
        async with Client(hub.endpoints, name="bench") as client:
            for i in range(drains):
                await next_wake()
                await asyncio.sleep(random.uniform(0.2, 0.8))
                t0 = time.monotonic()
                actions.append((t0, f"drain {i + 1}"))
                table = await client.placement("drain", "big")
                while any(a.worker == "big" for a in table.assignments):
                    await asyncio.sleep(0.05)
                    table = await client.placement()
                drain_idle.append(time.monotonic() - t0)
                print(f"drain {i + 1}/{drains}: big idle after {drain_idle[-1]:.2f} s")
                await next_wake()
                actions.append((time.monotonic(), f"undrain {i + 1}"))
                await client.placement("undrain", "big")
                await until(lambda: hub.assignments.get(("stt", "kitchen")) == "big", 60, "hand-back")
        await asyncio.sleep(6.0)  # the last command ends
    finally:
        stop.set()
        if speaker is not None:
            await asyncio.gather(speaker, return_exceptions=True)
        for p in procs.values():
            _kill(p)
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        pub.close()
        sub.close()
        await hub.stop()

    wakes = [m for _, m in arrivals if isinstance(m, WakeDetected)]
    finals = [m for _, m in arrivals if isinstance(m, Transcript) and m.final]
    per_wake = [sum(1 for f in finals if f.t0 - 0.01 <= w.time <= f.t1 + 0.01) for w in wakes[:-1]]
    t_of = {id(m): t for t, m in arrivals}
    duplicates = []
    for w, c in zip(wakes[:-1], per_wake, strict=False):
        if c < 2:
            continue
        covering = [f for f in finals if f.t0 - 0.01 <= w.time <= f.t1 + 0.01]
        t_w = t_of[id(w)]
        duplicates.append(
            {
                "finals": [
                    {
                        "worker": f.source,
                        "t0": round(f.t0 - w.time, 2),
                        "t1": round(f.t1 - w.time, 2),
                        "text": f.text,
                        "arrived_s": round(t_of[id(f)] - t_w, 2),
                    }
                    for f in covering
                ],
                "placements": [
                    {"arrived_s": round(t - t_w, 2), "from": m.from_worker, "to": m.to_worker, "reason": m.reason}
                    for t, m in arrivals
                    if isinstance(m, Placement) and -10 < t - t_w < 15
                ],
                "actions": [(round(t - t_w, 2), a) for t, a in actions if -10 < t - t_w < 15],
            }
        )
    return {
        "kills": kills,
        "kills_mid_command": len(takeover),
        "drains": drains,
        "heartbeat_s": 0.5,
        "takeover_after_s": 1.0,
        "takeover_first_transcript_s": _pct(takeover),
        "takeover_placement_event_s": _pct(placement_s),
        "drain_until_idle_s": _pct(drain_idle),
        "utterances": len(per_wake),
        "utterances_lost": sum(1 for c in per_wake if c == 0),
        "utterances_duplicated": sum(1 for c in per_wake if c > 1),
        "finals_by_worker": {w: sum(1 for f in finals if f.source == w) for w in ("big", "small")},
        "duplicates": duplicates,
        "logs": str(tmp / "logs"),
    }


def media_concat(pcm: np.ndarray, silence_s: float) -> np.ndarray:
    """``pcm`` followed by ``silence_s`` of silence."""
    return np.concatenate([pcm, np.zeros(int(silence_s * 16000), np.int16)])


def run(
    quick: bool = False, kills: int = 20, drains: int = 5, *, smoke: bool = False, out: Path = RESULTS
) -> dict[str, Any]:
    """Run the benchmark (``quick``: 3 kills, 2 drains; ``smoke``: 1 kill, 1 drain, for CI); returns the
    results, also written as JSON to ``out``."""
    if smoke:
        kills, drains = 1, 1
    elif quick:
        kills, drains = 3, 2
    result = asyncio.run(_bench(kills, drains))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(render(result))
    return result


def render(r: dict[str, Any]) -> str:
    """Markdown lines for the summary."""
    t, p, d = r["takeover_first_transcript_s"], r["takeover_placement_event_s"], r["drain_until_idle_s"]
    return "\n".join(
        [
            f"takeover over {r['kills']} SIGKILLs, {r['kills_mid_command']} mid-command (heartbeat "
            f"{r['heartbeat_s']} s, takeover_after {r['takeover_after_s']} s): first transcript from the standby "
            f"p50 {t['p50']:.2f} s, p95 {t['p95']:.2f} s; placement event p50 {p['p50']:.2f} s, p95 {p['p95']:.2f} s",
            f"utterances {r['utterances']}: lost {r['utterances_lost']}, duplicated {r['utterances_duplicated']} "
            f"(finals by worker: {r['finals_by_worker']})",
            f"drain --until-idle over {r['drains']} drains mid-command: p50 {d.get('p50', 0):.2f} s, "
            f"max {d.get('max', 0):.2f} s",
        ]
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--drains", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="3 kills, 2 drains")
    ap.add_argument("--smoke", action="store_true", help="1 kill, 1 drain: does it still run (CI)")
    add_out(ap, RESULTS)
    a = ap.parse_args()
    run(a.quick, a.kills, a.drains, smoke=a.smoke, out=a.out)
