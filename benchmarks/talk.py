"""Talk-back benchmark: TTS time-to-first-audio vs whole-answer synthesis, and voice-to-voice latency.

1. **TTS.** For short, medium and long answers and each backend (Piper joe, flite, espeak-ng):
   - *whole*: synthesize the whole answer in one call (what a non-streaming TTS does);
   - *first audio, text at once*: the TTS stage's first ``TtsAudio`` chunk when the whole text
     arrives in one ``Say`` (sentence streaming: only the first sentence is synthesized before it);
   - *first audio, LLM streaming*: the answer arrives as tokens at ``--tokens-per-s`` (an LLM on a
     homelab GPU); streaming sends the first sentence as soon as it is complete, while the
     non-streaming baseline waits for the last token and then synthesizes everything.
2. **Voice-to-voice.** A session of "hey jarvis, <command>" utterances (``benchmarks/voice_media``:
   Piper and flite voices, exact end-of-speech times) plays through the real edge agent into an
   embedded deployment (hub + one worker: wake, arbiter, stt, speaker, presence, tts), the built-in
   agent answers, and the edge's player writes the answers as WAVs. Per utterance, from the known
   end of speech: wake event, endpoint (t1), final transcript at the agent, the agent's ``say``, the
   first TTS chunk on the bus, and the first audio at the edge (its ``PlaybackStatus`` "started");
   p50/p95 per step. Answers still playing when the next "hey jarvis" comes are barged in: the
   wake → playback stopped time is reported too.
3. **Barge-in stop.** The edge player's ``stop`` latency (WAV sink; a sound card adds its buffer).

Run: ``.venv/bin/python -m benchmarks.talk [--quick] [--skip-v2v]``; prints tables and writes
``benchmarks/results/talk.json``. On a shared or 2-core machine the numbers are indicative only.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks.outfile import add_out, checkpoint, write_results

RESULTS = Path(__file__).resolve().parent / "results" / "talk.json"
ROOM, EDGE = "kitchen", "kitchen-pi"
log = logging.getLogger("bench.talk")

ANSWERS = {
    "short": "It is twenty past nine in the morning.",
    "medium": (
        "Alice is in the kitchen and Bob is in the office. Nobody else is home right now, and the front door is locked."
    ),
    "long": (
        "Good evening. Tomorrow will be cloudy in the morning with a chance of light rain around noon. "
        "In the afternoon the sun comes back and it gets up to eighteen degrees. "
        "The wind stays light, so it is a good day to dry the laundry outside. "
        "Remember that the bins go out tomorrow night."
    ),
}


def summary(values: list[float]) -> dict[str, float | int | None]:
    """p50 / p95 (nearest rank) / n of a list of milliseconds."""
    from sensorium.pipeline.metrics import summary as pct_summary

    return pct_summary(values, digits=1, suffix="_ms")


# ---------------------------------------------------------------------------------------- TTS


async def _stage(backend: str) -> tuple[Any, list[Any]]:
    from sensorium.nodes.tts import TtsStage
    from sensorium.pipeline.stage import StageContext

    out: list[Any] = []

    async def emit(msg: Any) -> None:
        out.append((time.perf_counter(), msg))

    stage = TtsStage(StageContext(name="tts", worker="bench", options=TtsStage.Options(backend=backend), emit=emit))
    await stage.start()
    return stage, out


def _tokens(text: str) -> list[str]:
    """Word-sized pieces, as an LLM streams them."""
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


async def bench_tts(backends: list[str], repeats: int, tokens_per_s: float) -> list[dict[str, Any]]:
    from sensorium.pipeline.messages import Say

    rows: list[dict[str, Any]] = []
    for backend in backends:
        try:
            stage, out = await _stage(backend)
        except Exception as exc:
            log.warning("skipping %s: %s", backend, exc)
            continue
        for label, text in ANSWERS.items():
            whole, ttfa, stream_first, audio_s = [], [], [], 0.0
            for r in range(repeats):
                t0 = time.perf_counter()
                pcm, rate = await stage.ctx.run_blocking(stage.backend.synthesize, text)
                whole.append((time.perf_counter() - t0) * 1000)
                audio_s = len(pcm) / rate

                out.clear()
                t0 = time.perf_counter()
                await stage.handle(Say(room=ROOM, answer_id=f"{label}-{r}", text=text))
                ttfa.append((out[0][0] - t0) * 1000)

                out.clear()
                pieces = _tokens(text)
                t0 = time.perf_counter()
                for i, piece in enumerate(pieces):
                    due = t0 + i / tokens_per_s
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    await stage.handle(Say(room=ROOM, answer_id=f"s-{label}-{r}", text=piece, more=i < len(pieces) - 1))
                stream_first.append((out[0][0] - t0) * 1000)
            text_done_ms = (len(_tokens(text)) - 1) / tokens_per_s * 1000
            row = {
                "backend": stage.backend.name,
                "answer": label,
                "chars": len(text),
                "audio_s": round(audio_s, 2),
                "whole_synthesis_ms": round(statistics.median(whole), 1),
                "first_audio_text_at_once_ms": round(statistics.median(ttfa), 1),
                "llm_stream_first_audio_ms": round(statistics.median(stream_first), 1),
                "llm_nonstream_first_audio_ms": round(text_done_ms + statistics.median(whole), 1),
            }
            rows.append(row)
        await stage.stop()
        stage.ctx.close()
    return rows


# --------------------------------------------------------------------------------- barge-in stop


async def bench_stop(repeats: int) -> dict[str, Any]:
    from sensorium.edge.playback import Player
    from sensorium.pipeline.clock import Clock
    from sensorium.pipeline.config import PlaybackConfig
    from sensorium.pipeline.messages import TtsAudio

    async def publish(msg: Any) -> None:
        pass

    lat: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        player = Player(PlaybackConfig(wav_dir=tmp, rate=22050), ROOM, EDGE, Clock(), publish)
        tone = (np.sin(np.arange(22050 * 3) * 0.05) * 8000).astype("<i2").tobytes()
        for i in range(repeats):
            await player.feed(TtsAudio(room=ROOM, answer_id=f"a{i}", text="x", rate=22050, final=True, data=tone))
            await asyncio.sleep(0.15 + 0.01 * (i % 7))  # stop at varying points inside a block
            lat.append(await player.stop() * 1000)
        await player.close()
    return summary(lat)


# ----------------------------------------------------------------------------- voice-to-voice


async def bench_v2v(count: int, out_dir: Path) -> dict[str, Any]:
    from benchmarks.voice_media import build_session
    from sensorium.apps.agent import Turn, run_builtin_agent
    from sensorium.edge.agent import EdgeAgent
    from sensorium.embedded import embedded
    from sensorium.evaluation.demo import demo_deployment
    from sensorium.pipeline.bus import Subscriber
    from sensorium.pipeline.client import Client
    from sensorium.pipeline.messages import PlaybackStatus, Transcript, TtsAudio, WakeDetected

    session = build_session(count)
    dep = demo_deployment({ROOM: session.path}, {}, out_dir, talk=True)
    events: list[tuple[float, Any]] = []
    tts_first: dict[str, float] = {}
    turns: list[Turn] = []
    async with embedded(dep) as env:
        async with Client(env.endpoints, name="bench-talk", clock=env.clock) as client:
            await client.wait_connected(10)

            async def listen() -> None:
                async for ev in client.events(["wake", "transcript", "playback", "arbitration"]):
                    events.append((env.clock.now(), ev))

            async def watch_tts() -> None:
                sub = Subscriber(env.endpoints, [f"tts_audio/{ROOM}/"])
                try:
                    while True:
                        msg = await sub.recv()
                        if isinstance(msg, TtsAudio) and msg.answer_id not in tts_first:
                            tts_first[msg.answer_id] = env.clock.now()
                finally:
                    sub.close()

            first_audio = Subscriber(env.endpoints, [f"audio/{ROOM}/{EDGE}"])
            tasks = [
                asyncio.create_task(listen()),
                asyncio.create_task(watch_tts()),
                asyncio.create_task(run_builtin_agent(env.endpoints, clock=env.clock, turns=turns)),
            ]
            await asyncio.sleep(0.5)
            edge = EdgeAgent(dep, EDGE, hub_address=env.address, clock=env.clock)
            edge_task = asyncio.create_task(edge.run())
            start = (await first_audio.recv()).time
            first_audio.close()
            # Until the last utterance's answer started playing (or 20 s after the session's end).
            deadline = time.monotonic() + session.duration + 20
            while time.monotonic() < deadline:
                last = start + session.utterances[-1].speech_end
                started = [e for _, e in events if isinstance(e, PlaybackStatus) and e.state == "started"]
                if any(t.speech_end >= last for t in turns) and len(started) >= len(turns):
                    await asyncio.sleep(1.0)
                    break
                await asyncio.sleep(0.2)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            edge.stop()
            edge_task.cancel()
            await asyncio.gather(edge_task, return_exceptions=True)
            stages = env.summary()

    finals = {e.utterance_id: (t, e) for t, e in events if isinstance(e, Transcript) and e.final and e.text}
    wakes = [(t, e) for t, e in events if isinstance(e, WakeDetected)]
    started = {e.answer_id: e.time for _, e in events if isinstance(e, PlaybackStatus) and e.state == "started"}
    stopped = [e for _, e in events if isinstance(e, PlaybackStatus) and e.state == "stopped"]
    steps: dict[str, list[float]] = {
        k: []
        for k in (
            "end of wake word -> wake event",
            "end of speech -> endpoint (t1)",
            "end of speech -> final transcript at agent",
            "final transcript -> agent say",
            "agent say -> first TTS chunk on bus",
            "first TTS chunk -> first audio at edge",
            "end of speech -> first audio at edge (voice-to-voice)",
        )
    }
    per_utt: list[dict[str, Any]] = []
    for u in session.utterances:
        speech_end = start + u.speech_end
        wake_end = start + u.wake_end
        w = [t for t, e in wakes if wake_end - 0.5 <= e.time <= start + u.command_start + 1.0]
        if w:
            steps["end of wake word -> wake event"].append((w[0] - wake_end) * 1000)
        turn = next((t for t in turns if start + u.start <= t.speech_end <= start + u.window_end + 1.0), None)
        row: dict[str, Any] = {"utterance": u.name, "command": u.command}
        if turn is None:
            per_utt.append(row | {"answered": False})
            continue
        fin = finals.get(turn.utterance_id)
        if fin is not None:
            steps["end of speech -> endpoint (t1)"].append((fin[1].t1 - speech_end) * 1000)
        steps["end of speech -> final transcript at agent"].append((turn.transcript_at - speech_end) * 1000)
        steps["final transcript -> agent say"].append((turn.said_at - turn.transcript_at) * 1000)
        if turn.answer_id in tts_first:
            steps["agent say -> first TTS chunk on bus"].append((tts_first[turn.answer_id] - turn.said_at) * 1000)
            if turn.answer_id in started:
                steps["first TTS chunk -> first audio at edge"].append(
                    (started[turn.answer_id] - tts_first[turn.answer_id]) * 1000
                )
        if turn.answer_id in started:
            v2v = (started[turn.answer_id] - speech_end) * 1000
            steps["end of speech -> first audio at edge (voice-to-voice)"].append(v2v)
            row["voice_to_voice_ms"] = round(v2v, 1)
        per_utt.append(row | {"answered": True, "heard": turn.question, "answer": turn.answer})
    barge = []
    for s in stopped:
        before = [e.time for _, e in wakes if e.room == s.room and e.time <= s.time]
        if before:
            barge.append((s.time - before[-1]) * 1000)
    return {
        "session": {"utterances": len(session.utterances), "duration_s": round(session.duration, 1)},
        "answered": sum(1 for r in per_utt if r.get("answered")),
        "steps": {k: summary(v) for k, v in steps.items()},
        "barge_in_wake_capture_to_stopped": summary(barge),
        "stages": stages,
        "utterances": per_utt,
    }


# -------------------------------------------------------------------------------------- main


def run(quick: bool = False, skip_v2v: bool = False, tokens_per_s: float = 20.0) -> dict[str, Any]:
    """Run everything; returns the results dict (each part written as it ends: ``checkpoint``)."""
    backends = ["piper", "flite", "espeak"]
    result: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "device": "cpu"},
        "tokens_per_s": tokens_per_s,
    }
    result["tts"] = asyncio.run(bench_tts(backends, 1 if quick else 3, tokens_per_s))
    checkpoint(result)
    result["player_stop"] = asyncio.run(bench_stop(5 if quick else 20))
    checkpoint(result)
    if not skip_v2v:
        with tempfile.TemporaryDirectory() as tmp:
            result["voice_to_voice"] = asyncio.run(bench_v2v(4 if quick else 20, Path(tmp)))
    return result


def print_result(r: dict[str, Any]) -> None:
    print(f"\nTTS: first audio vs whole answer (ms; LLM streaming at {r['tokens_per_s']:.0f} tokens/s)")
    print(
        f"{'backend':<24} {'answer':<7} {'audio s':>7} {'whole':>8} {'first':>8} {'LLM stream':>11} {'LLM whole':>10}"
    )
    for row in r["tts"]:
        print(
            f"{row['backend']:<24} {row['answer']:<7} {row['audio_s']:>7.2f} {row['whole_synthesis_ms']:>8.0f} "
            f"{row['first_audio_text_at_once_ms']:>8.0f} {row['llm_stream_first_audio_ms']:>11.0f} "
            f"{row['llm_nonstream_first_audio_ms']:>10.0f}"
        )
    s = r["player_stop"]
    print(f"\nEdge player stop (barge-in): p50 {s['p50_ms']:.2f} ms, p95 {s['p95_ms']:.2f} ms (n={s['n']})")
    v = r.get("voice_to_voice")
    if v:
        print(f"\nVoice-to-voice, built-in agent, CPU ({v['answered']}/{v['session']['utterances']} answered)")
        for k, st in v["steps"].items():
            print(f"  {k:<56} p50 {st['p50_ms']:>7.0f}  p95 {st['p95_ms']:>7.0f}  n={st['n']}")
        b = v["barge_in_wake_capture_to_stopped"]
        if b["n"]:
            print(
                f"  {'barge-in: wake capture -> playback stopped':<56} p50 {b['p50_ms']:>7.0f}  p95 {b['p95_ms']:>7.0f}"
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats and a 4-utterance session")
    p.add_argument("--skip-v2v", action="store_true", help="only the TTS and player numbers")
    p.add_argument("--tokens-per-s", type=float, default=20.0, help="simulated LLM streaming rate")
    add_out(p, RESULTS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    r = write_results(args.out, lambda: run(quick=args.quick, skip_v2v=args.skip_v2v, tokens_per_s=args.tokens_per_s))
    print_result(r)
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def render(r: dict[str, Any]) -> str:
    """The printed tables as text (for benchmarks/results/SUMMARY.md)."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_result(r)
    return buf.getvalue().strip()
