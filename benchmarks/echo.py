"""Echo benchmark: a room that hears its own loudspeaker; self-wakes, self-transcripts and barge-in, before and after.

Scenes come from ``evaluation.echo``: what the loudspeaker plays (sensorium's Piper answers, two of which
say "hey jarvis"; synthesized music; a TV voice, flite awb, two of whose lines say "hey jarvis") reaches
the microphone through a generated room impulse response at a signal-to-echo ratio (SER), people (other
flite voices) speak on top. Each scene is replayed faster than real time through the real stages, in
the 80 ms chunks an edge sends:

- **before**: today's path: the edge sends no reference, the wake stage has no playback bar and no
  own-voice check (``playback_threshold = 0``, ``self_reject = false``);
- **after**: the edge's ``ReferenceTap`` cuts what the speaker played for each chunk (``AudioChunk.reference``)
  and the wake stage runs with its defaults;
- **after+nlms**: as after, and the edge cancels the echo (``[edges.X.microphone] echo_cancel``) before
  sending with sensorium's numpy canceller (``echo_canceller = "nlms"``, ``pipeline.aec.EchoCanceller``);
- **after+speex**: the same with speexdsp's canceller (``echo_canceller = "speex"``, the default: the
  system's libspeexdsp through ``pipeline.aec.SpeexEchoCanceller``).

Every wake detection then goes through the real arbiter (``ArbiterStage``) as it would live: when it falls
in an answer, the arbiter first gets that answer's ``Say`` and the edge's ``PlaybackStatus`` "started" (today's
arbiter knows answers, not music or TV). A detection the arbiter keeps opens an utterance in the STT stage
(which opens on the wake word and stands down only for the arbiter's losers and echoes): in a scene where
nobody speaks, each is a **self-transcript**; each WakeDetected at all is a **self-wake**. STT itself is not
run over the hour (its cost is the decode after a wake; its code path is unchanged by this work).

Barge-in: people say "hey jarvis, stop" during playback every ~12 s; recall is the share of those
phrases detected (0.5 s before to 1.5 s after the wake phrase's end) and kept by the arbiter; detections
elsewhere are false barge-ins. The same phrases in the same room with nothing playing give the silent-room
recall beside it (what the people's voices and the room's reverberation allow at all). Nothing playing:
wake latency (capture time of the detection − end of "hey jarvis") and the wake stage's processing time
per chunk, before and after, in one run. Edge CPU: the reference tap's (and canceller's) cost per second of
audio on this machine.

The programme is ``--minutes`` long per SER (default 10) and counts are scaled to one hour (× 60/minutes).

Run: ``.venv/bin/python -m benchmarks.echo [--minutes 10] [--barge-minutes 5]``;
writes ``benchmarks/results/echo.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks.outfile import add_out, write_results
from sensorium.edge.echo import ReferenceTap
from sensorium.evaluation.echo import Scene, barge_in_scene, playback_scene, quiet_scene
from sensorium.nodes.arbiter import ArbiterStage
from sensorium.nodes.wake import WakeStage
from sensorium.pipeline.aec import make_canceller
from sensorium.pipeline.messages import AudioChunk, Message, PlaybackStatus, Say, WakeArbitrated, WakeDetected
from sensorium.pipeline.stage import StageContext

ROOM, NODE = "living", "living-pi"
BLOCK = 1280
BEFORE = {"playback_threshold": 0.0, "self_reject": False}
VARIANTS: tuple[tuple[str, bool, str, dict[str, Any]], ...] = (
    ("before", False, "", BEFORE),
    ("after", True, "", {}),
    ("after+nlms", True, "nlms", {}),
    ("after+speex", True, "speex", {}),
)


def chunks(scene: Scene, t0: float, reference: bool, aec: str = "") -> tuple[list[AudioChunk], float]:
    """The scene as the edge would send it (``reference``: cut by the edge's tap; ``aec``: echo cancelled by
    that canceller, as the edge makes it) and the edge's CPU seconds for both."""
    tap = ReferenceTap(16000) if reference else None
    canceller = make_canceller(aec) if aec else None
    out: list[AudioChunk] = []
    cpu = 0.0
    for start in range(0, len(scene.mic), BLOCK):
        t = t0 + start / 16000
        data = scene.mic[start : start + BLOCK].astype("<i2").tobytes()
        ref = b""
        if tap is not None:
            c = time.process_time()
            tap.add(t, scene.played[start : start + BLOCK], join=False)
            ref = tap.take(t, len(data) // 2)
            if canceller is not None:
                heard = np.frombuffer(ref, "<i2") if ref else np.zeros(len(data) // 2, np.int16)
                data = canceller.process(np.frombuffer(data, "<i2"), heard).tobytes()
            cpu += time.process_time() - c
        out.append(
            AudioChunk(
                time=t,
                room=ROOM,
                source=NODE,
                rate=16000,
                data=data,
                reference=ref,
                echo_cancelled=canceller is not None,
            )
        )
    return out, cpu


async def run_wake(msgs: list[AudioChunk], opts: dict[str, Any]) -> tuple[list[WakeDetected], list[float], WakeStage]:
    out: list[Message] = []

    async def emit(m: Message) -> None:
        out.append(m)

    ctx = StageContext(name="wake", worker="bench", options=WakeStage.Options(**opts), rooms=(ROOM,), emit=emit)
    stage = WakeStage(ctx)
    await stage.start()
    per_chunk: list[float] = []
    for m in msgs:
        t = time.perf_counter()
        await stage.handle(m)
        per_chunk.append((time.perf_counter() - t) * 1000)
    await stage.stop()
    return [m for m in out if isinstance(m, WakeDetected)], per_chunk, stage


async def arbitrate(scene: Scene, t0: float, wake: WakeDetected) -> bool:
    """Whether the real arbiter keeps ``wake`` (an utterance opens; during an answer, a barge-in stops it)."""
    out: list[Message] = []

    async def emit(m: Message) -> None:
        out.append(m)

    ctx = StageContext(
        name="arbiter", worker="bench", options=ArbiterStage.Options(window_ms=1), rooms=(ROOM,), emit=emit
    )
    arb = ArbiterStage(ctx)
    span = scene.playing_at(wake.time - t0)
    if span is not None and span.kind == "answer":
        await arb.handle(Say(room=ROOM, time=t0 + span.start, answer_id="a1", text=span.text))
        await arb.handle(PlaybackStatus(room=ROOM, source=NODE, time=t0 + span.start, answer_id="a1", state="started"))
    await arb.handle(wake)
    await arb.stop()
    decisions = [m for m in out if isinstance(m, WakeArbitrated)]
    return bool(decisions and decisions[-1].room)


async def playback_hour(minutes: float, ser: float, cache: Path, seed: int) -> dict[str, Any]:
    scene = playback_scene(minutes * 60, ser, cache, seed=seed)
    scale = 60.0 / minutes
    t0 = time.time() - scene.seconds - 30
    res: dict[str, Any] = {"ser_db": ser, "simulated_s": round(scene.seconds, 1), "scale_to_hour": round(scale, 2)}
    for name, ref, aec, opts in VARIANTS:
        msgs, tap_cpu = chunks(scene, t0, ref, aec)
        c = time.process_time()
        w = time.perf_counter()
        wakes, _, stage = await run_wake(msgs, opts)
        cpu = time.process_time() - c
        wall = time.perf_counter() - w
        kept = [x for x in wakes if await arbitrate(scene, t0, x)]
        by_kind: dict[str, int] = {}
        for x in wakes:
            span = scene.playing_at(x.time - t0)
            k = span.kind if span else "pause"
            by_kind[k] = by_kind.get(k, 0) + 1
        res[name] = {
            "self_wakes": len(wakes),
            "self_transcripts": len(kept),
            "self_wakes_per_hour": round(len(wakes) * scale, 1),
            "self_transcripts_per_hour": round(len(kept) * scale, 1),
            "self_wakes_by_programme": by_kind,
            "wake_scores": [round(x.score, 3) for x in wakes],
            "rejected": dict(stage.rejected),
            "wake_cpu_per_audio_s": round(cpu / scene.seconds, 4),
            "replay_speed_x": round(scene.seconds / wall, 1),
            "edge_cpu_per_audio_s": round(tap_cpu / scene.seconds, 6),
        }
        logging.info("ser %+.0f dB %s: %s", ser, name, res[name])
    return res


async def barge_in(minutes: float, ser: float, cache: Path, seed: int) -> dict[str, Any]:
    scene = barge_in_scene(minutes * 60, ser, cache, seed=seed)
    phrases = [s for s in scene.spans if s.kind == "barge"]
    t0 = time.time() - scene.seconds - 30
    res: dict[str, Any] = {"ser_db": ser, "simulated_s": round(scene.seconds, 1), "phrases": len(phrases)}
    silent = barge_in_scene(minutes * 60, ser, cache, seed=seed, silent=True)
    for name, ref, aec, opts in (*VARIANTS, ("silent_room", False, "", {})):
        msgs, _ = chunks(silent if name == "silent_room" else scene, t0, ref, aec)
        wakes, _, stage = await run_wake(msgs, opts)
        hits = 0
        used: set[int] = set()
        for p in phrases:
            for i, x in enumerate(wakes):
                if i not in used and p.wake_end - 0.5 <= x.time - t0 <= p.wake_end + 1.5:
                    used.add(i)
                    hits += await arbitrate(scene, t0, x)
                    break
        false = [x for i, x in enumerate(wakes) if i not in used]
        false_kept = [x for x in false if await arbitrate(scene, t0, x)]
        res[name] = {
            "recall": round(hits / len(phrases), 3) if phrases else None,
            "detected": hits,
            "false_barge_ins": len(false_kept),
            "false_barge_ins_per_hour": round(len(false_kept) * 3600 / scene.seconds, 1),
            "rejected": dict(stage.rejected),
        }
        logging.info("barge-in ser %+.0f dB %s: %s", ser, name, res[name])
    return res


async def quiet(cache: Path, rounds: int = 3) -> dict[str, Any]:
    """Nothing plays: wake latency and processing per chunk, before and after, interleaved."""
    scene = quiet_scene(cache, count=6)
    wake_ends = [s.wake_end for s in scene.spans if s.kind == "command"]
    t0 = time.time() - scene.seconds - 30
    lat: dict[str, list[float]] = {"before": [], "after": []}
    proc: dict[str, list[float]] = {"before": [], "after": []}
    found: dict[str, int] = {"before": 0, "after": 0}
    for _ in range(rounds):
        for name, ref, opts in (("before", False, BEFORE), ("after", True, {})):
            msgs, _ = chunks(scene, t0, ref)
            wakes, per_chunk, _ = await run_wake(msgs, opts)
            proc[name] += per_chunk
            for we in wake_ends:
                near = [x.time - t0 - we for x in wakes if -0.5 <= x.time - t0 - we <= 1.5]
                if near:
                    found[name] += 1
                    lat[name].append(min(near) * 1000)

    def stats(v: list[float]) -> dict[str, float | int | None]:
        from sensorium.pipeline.metrics import summary

        return summary(v, digits=2)

    return {
        name: {
            "wakes_found": f"{found[name]}/{len(wake_ends) * rounds}",
            "wake_latency_ms": stats(lat[name]) if lat[name] else None,
            "wake_ms_per_chunk": stats(proc[name]),
        }
        for name in ("before", "after")
    }


async def measure(
    minutes: float = 10.0, barge_minutes: float = 5.0, cache: Path = Path(".cache/echo")
) -> dict[str, Any]:
    await asyncio.to_thread(cache.mkdir, parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
        "method": "faster-than-real-time replay of 80 ms chunks through the real wake and arbiter stages; "
        f"{minutes} min of playback per SER scaled to one hour",
    }
    result["quiet"] = await quiet(cache)
    result["playback"] = [await playback_hour(minutes, ser, cache, seed=1) for ser in (0.0, -10.0)]
    result["barge_in"] = [await barge_in(barge_minutes, ser, cache, seed=2) for ser in (0.0, -6.0)]
    result["machine"]["loadavg_end"] = os.getloadavg()
    return result


def run(quick: bool = False) -> dict[str, Any]:
    """``python -m benchmarks``' entry: the full run, or one minute of each scene for CI-sized runs."""
    return asyncio.run(measure(1.0, 1.0) if quick else measure())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="playback simulated per SER (scaled to an hour)")
    ap.add_argument("--barge-minutes", type=float, default=5.0, help="barge-in scene length per SER")
    add_out(ap, Path("benchmarks/results/echo.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("sensorium", "stage"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = write_results(args.out, lambda: asyncio.run(measure(args.minutes, args.barge_minutes)))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
