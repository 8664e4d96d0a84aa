"""Wyoming benchmark: Home Assistant's voice path through the sensorium gateway vs the Wyoming peers.

The same session as the voice benchmark (``benchmarks/voice_media.py``: >= 20 "hey jarvis, <command>"
utterances, Piper and flite voices, known end of wake word and end of speech) goes through the
Wyoming protocol to both sides, sent by the same satellite-like client (``benchmarks/peers/client.py``):
a continuous wake stream (``detect`` + 80 ms ``audio-chunk``s in real time) and, on each detection,
an STT request fed from the end of the wake word on, with ``audio-stop`` at end of speech + 0.7 s
(an ideal endpointer, Home Assistant's silence).

- **theirs**: ``wyoming-openwakeword`` and ``wyoming-faster-whisper`` (same model files, same beam
  and threads as our stt; ``benchmarks.voice.run_theirs``);
- **ours**: ``sensorium wyoming``'s gateway (in process) in front of the wake, stt and speaker stages
  of an embedded deployment. Our STT service says ``requires_external_vad: false``, so the client
  reads while it streams (``--read-early``) and stops at the transcript, as a satellite would; for the
  peers the flag changes nothing (their transcript only comes after ``audio-stop``).

Numbers (p50/p95, ms): wake latency (end of "hey jarvis" → ``detection`` at the client), end of
speech → ``transcript`` at the client, word error rate; the gateway's own cost per ``audio-chunk``
(convert, cut, publish) and per request (set-up and answer forwarding, µs). And the satellites:
two rooms hear one wake word at different levels, and the pipelines each room's satellite starts in
(a stand-in for) Home Assistant are counted.

Run: ``.venv/bin/python -m benchmarks.wyoming [--quick] [--count N] [--no-peers]``; prints a table and
writes ``benchmarks/results/wyoming.json``. ``run(quick=False) -> dict`` and ``render`` are the module API.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks import voice
from benchmarks.outfile import add_out, checkpoint, write_results
from benchmarks.peers import servers as peers
from benchmarks.voice_media import Session, build_session, synthesize
from sensorium.evaluation.ports import free_ports

RESULTS = Path(__file__).resolve().parent / "results" / "wyoming.json"
CHUNK_MS = 80
RATE = 16000
log = logging.getLogger("bench.wyoming")

#: Two-room trials: (voice, kitchen gain dB, office gain dB); the louder room should be the only one to run.
TRIALS = [
    ("piper:joe", 0.0, -14.0),
    ("flite:rms", -14.0, 0.0),
    ("flite:slt", 0.0, -10.0),
    ("flite:awb", -10.0, 0.0),
    ("piper:joe", 0.0, -6.0),
    ("flite:kal16", -6.0, 0.0),
]


def _percentiles(values: list[float]) -> dict[str, Any]:
    from sensorium.pipeline.metrics import summary

    return summary(values, digits=1)


def _deployment(tmp: Path, ports: dict[str, int], stages: list[str], rooms: list[str]) -> Any:
    from sensorium.deployment import deployment_from_dict

    raw = {
        "data_dir": str(tmp),
        "hub": {"address": f"inproc://bench-wyoming-{os.getpid()}-{len(stages)}"},
        "rooms": {r: {} for r in rooms},
        "edges": {f"{r}-pi": {"room": r, "microphone": {}} for r in rooms},
        "workers": {"voice": {"stages": stages}},
        "wyoming": {
            "host": "127.0.0.1",
            "zeroconf": False,
            **{f"{role}_port": ports.get(role, 0) for role in ("wake", "stt", "tts", "handle")},
            "satellites": {r: ports[r] for r in rooms if r in ports},
        },
    }
    return deployment_from_dict(raw, "<bench-wyoming>")


def _rows(session: Session, raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-utterance numbers from the client's output (the same rules as the voice benchmark's peers)."""
    rows = []
    for u, row, req in voice.client_rows(session, raw):
        t_tr = req.get("t_transcript")
        rows.append(
            row
            | {
                "before_stop": t_tr is not None and t_tr < req.get("t_stop", 1e9),
                "speaker": req.get("speaker"),
                "enrolled": ENROLLED.get(u.voice.split(":")[0] + ":" + u.voice.split(":")[1]),
            }
        )
    return rows


ENROLLED = {"piper:joe": "joe", "flite:slt": "sally"}
"""The voices ``voice._enroll`` enrols (Piper joe at any speaking rate is joe)."""


def _speaker_rate(rows: list[dict[str, Any]], present: bool = False) -> float | None:
    """Share (%) of the transcripts of enrolled voices that named the right speaker (``present``: any
    speaker, "unknown" included: speaker ID answered in time)."""
    mine = [r for r in rows if r["enrolled"] and r["eos_to_final_ms"] is not None]
    ok = [r["speaker"] is not None if present else r["speaker"] == r["enrolled"] for r in mine]
    return round(100 * sum(ok) / len(mine), 1) if mine else None


def run_ours(session: Session, warmup: Session, *, endpoint_s: float) -> dict[str, Any]:
    """The session through our gateway in front of the wake, stt and speaker stages."""
    from sensorium.bridges.wyoming.server import Server
    from sensorium.bridging import offer_for
    from sensorium.embedded import embedded

    ports = dict(zip(("wake", "stt"), free_ports(2), strict=True))
    with tempfile.TemporaryDirectory(prefix="bench-wyoming-") as tmp:
        voice._enroll(Path(tmp), {})
        dep = _deployment(Path(tmp), ports, ["wake", "stt", "speaker"], ["kitchen"])
        uris = {"wake_uri": f"tcp://127.0.0.1:{ports['wake']}", "stt_uri": f"tcp://127.0.0.1:{ports['stt']}"}

        async def main() -> tuple[dict[str, Any], dict[str, list[float]], float]:
            async with embedded(dep, workers=["voice"]) as env:
                gw = Server(dep, offer_for(dep), endpoints=env.endpoints, clock=env.clock)
                await gw.start()
                try:
                    await asyncio.to_thread(
                        peers.run_client, warmup.to_json(), endpoint_s=endpoint_s, read_early=True, **uris
                    )
                    for q in (gw.metrics.chunk_us, gw.metrics.answer_us, gw.metrics.request_us):
                        q.clear()
                    cpu0 = time.process_time()
                    raw = await asyncio.to_thread(
                        peers.run_client, session.to_json(), endpoint_s=endpoint_s, read_early=True, **uris
                    )
                    cpu = time.process_time() - cpu0
                    m = gw.metrics
                    return (
                        raw,
                        {"chunk": list(m.chunk_us), "answer": list(m.answer_us), "request": list(m.request_us)},
                        cpu,
                    )
                finally:
                    await gw.stop()

        raw, metrics, cpu = asyncio.run(main())
    rows = _rows(session, raw)
    return {
        "rows": rows,
        "wake_ms": voice.stats([r["wake_ms"] for r in rows]),
        "eos_to_final_ms": voice.stats([r["eos_to_final_ms"] for r in rows]),
        "transcripts_before_audio_stop": sum(bool(r["before_stop"]) for r in rows),
        "speaker_on_enrolled_transcripts_pct": _speaker_rate(rows),
        "speaker_named_on_enrolled_transcripts_pct": _speaker_rate(rows, present=True),
        "wer": voice._mean([r["wer"] for r in rows]),
        "wake_detected": sum(r["wake_ms"] is not None for r in rows),
        "process_cpu_core_share": round(cpu / session.duration, 3),
        "gateway_chunk_us": _percentiles(metrics["chunk"]),
        "gateway_answer_us": _percentiles(metrics["answer"]),
        "gateway_request_us": _percentiles(metrics["request"]),
        "client_sender_lag_p95_ms": round(raw["sender_lag_p95_ms"], 2),
    }


# ------------------------------------------------------------------------------------- two rooms


def two_rooms(trials: list[tuple[str, float, float]] = TRIALS) -> dict[str, Any]:
    """Both rooms' microphones hear one "hey jarvis, what time is it" at different levels; count the pipelines
    each room's satellite starts in a Home Assistant stand-in (a Wyoming client per satellite)."""
    from wyoming.client import AsyncTcpClient
    from wyoming.satellite import RunSatellite

    from sensorium.bridges.wyoming.server import Server
    from sensorium.bridging import offer_for
    from sensorium.embedded import embedded
    from sensorium.pipeline.bus import Publisher
    from sensorium.pipeline.messages import AudioChunk

    rooms = ["kitchen", "office"]
    ports = dict(zip(rooms, free_ports(len(rooms)), strict=True))
    counts: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-wyoming-rooms-") as tmp:
        dep = _deployment(Path(tmp), ports, ["wake", "arbiter", "stt"], rooms)

        async def main() -> list[dict[str, Any]]:
            out = []
            async with embedded(dep, workers=["voice"]) as env:
                gw = Server(dep, offer_for(dep), endpoints=env.endpoints, clock=env.clock)
                await gw.start()
                pub = Publisher(env.endpoints)
                runs = {r: 0 for r in rooms}

                async def ha(room: str) -> None:
                    async with AsyncTcpClient("127.0.0.1", ports[room]) as c:
                        await c.write_event(RunSatellite().event())
                        while (ev := await c.read_event()) is not None:
                            runs[room] += ev.type == "run-pipeline"

                clients = [asyncio.create_task(ha(r)) for r in rooms]
                await asyncio.sleep(0.5)
                try:
                    for k, (voice_name, kitchen_db, office_db) in enumerate(trials):
                        pcm = np.concatenate(
                            [
                                np.zeros(int(0.8 * RATE), np.float32),
                                synthesize("hey jarvis", voice_name).astype(np.float32),
                                np.zeros(int(0.3 * RATE), np.float32),
                                synthesize("what time is it", voice_name).astype(np.float32),
                                np.zeros(int(2.5 * RATE), np.float32),
                            ]
                        )
                        pcm += np.random.default_rng(k).normal(0, 10, len(pcm)).astype(np.float32)  # room noise
                        mics = {
                            room: np.clip(pcm * 10 ** (db / 20), -32768, 32767).astype("<i2")
                            for room, db in (("kitchen", kitchen_db), ("office", office_db))
                        }
                        before = dict(runs)
                        t0 = env.clock.now()
                        start = time.monotonic()
                        step = RATE * CHUNK_MS // 1000
                        for i in range(0, len(pcm), step):
                            for room in rooms:
                                data = mics[room][i : i + step].tobytes()
                                await pub.publish(
                                    AudioChunk(time=t0 + i / RATE, room=room, source=f"{room}-pi", data=data)
                                )
                            delay = start + (i + step) / RATE - time.monotonic()
                            if delay > 0:
                                await asyncio.sleep(delay)
                        await asyncio.sleep(1.0)
                        louder = "kitchen" if kitchen_db > office_db else "office"
                        got = {r: runs[r] - before[r] for r in rooms}
                        out.append({"voice": voice_name, "kitchen_db": kitchen_db, "office_db": office_db,
                                    "louder": louder, "pipelines": got})  # fmt: skip
                finally:
                    for c in clients:
                        c.cancel()
                    pub.close()
                    await gw.stop()
            return out

        results = asyncio.run(main())
    for r in results:
        counts[f"{r['voice']} {r['kitchen_db']:+.0f}/{r['office_db']:+.0f} dB"] = r["pipelines"]
    right = sum(r["pipelines"][r["louder"]] == 1 and sum(r["pipelines"].values()) == 1 for r in results)
    return {
        "trials": results,
        "utterances": len(results),
        "pipelines_started": sum(sum(r["pipelines"].values()) for r in results),
        "one_pipeline_in_the_louder_room": right,
    }


# ------------------------------------------------------------------------------------------ run


def run(quick: bool = False, *, count: int | None = None, device: str = "cpu", do_peers: bool = True) -> dict[str, Any]:
    """Run the benchmark; returns the result dict (also what ``__main__`` writes to JSON)."""
    count = count or (3 if quick else 20)
    session = build_session(count)
    warmup = build_session(1, first=len(session.utterances) + 1)
    stt = voice._stt_defaults({})
    endpoint_s = stt["trailing_silence_s"]
    result: dict[str, Any] = voice.run_header("wyoming", device, quick, session, endpoint_s)
    if do_peers:
        reason = peers.missing_reason()
        if reason:
            result["theirs"] = {"skipped": reason}
        else:
            print(f"wyoming: peers, {count} utterances …", file=sys.stderr)
            result["theirs"] = voice._guarded(
                voice.run_theirs,
                session,
                warmup,
                device=device,
                endpoint_s=endpoint_s,
                beam_size=stt["beam_size"],
                cpu_threads=stt["cpu_threads"] or 4,
            )
        checkpoint(result)
    print(f"wyoming: ours through the gateway, {count} utterances …", file=sys.stderr)
    result["ours"] = voice._guarded(run_ours, session, warmup, endpoint_s=endpoint_s)
    checkpoint(result)
    print("wyoming: two rooms, one wake word …", file=sys.stderr)
    result["two_rooms"] = voice._guarded(two_rooms, TRIALS[:2] if quick else TRIALS)
    o, t = result.get("ours", {}), result.get("theirs", {})
    if "rows" in o and "rows" in t:
        r = {
            "wake_p50": voice._ratio(o["wake_ms"]["p50"], t["wake_ms"]["p50"]),
            "wake_p95": voice._ratio(o["wake_ms"]["p95"], t["wake_ms"]["p95"]),
            "eos_to_final_p50": voice._ratio(o["eos_to_final_ms"]["p50"], t["eos_to_final_ms"]["p50"]),
            "eos_to_final_p95": voice._ratio(o["eos_to_final_ms"]["p95"], t["eos_to_final_ms"]["p95"]),
        }
        result["ratio_ours_over_theirs"] = r
        result["goals"] = {
            "eos_to_final_ratio_le_0.5": r["eos_to_final_p50"] is not None and r["eos_to_final_p50"] <= 0.5,
            "wake_latency_ratio_le_1": r["wake_p50"] is not None and r["wake_p50"] <= 1.0,
        }
    return result


def _f(v: Any, digits: int = 0) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def render(result: dict[str, Any]) -> str:
    """Markdown for SUMMARY.md (and the console)."""
    o, t = result.get("ours", {}), result.get("theirs", {})
    r = result.get("ratio_ours_over_theirs", {})
    lines = [
        f"Wyoming protocol, {result['utterances']} utterances ({result['audio_s']} s), one satellite-like client, "
        f"{result['host']['cpus']} CPUs, load {result['host']['load_avg_1m']}",
        "",
        "| through Wyoming | sensorium gateway | wyoming-openwakeword / -faster-whisper | ours/theirs |",
        "|---|---|---|---|",
    ]
    if "rows" in o:
        tw, te = t.get("wake_ms", {}), t.get("eos_to_final_ms", {})
        n = result["utterances"]
        lines += [
            f'| wake: end of "hey jarvis" → detection, p50 / p95 ms | {_f(o["wake_ms"]["p50"])} / '
            f"{_f(o['wake_ms']['p95'])} ({o['wake_detected']}/{n}) | {_f(tw.get('p50'))} / "
            f"{_f(tw.get('p95'))} ({t.get('wake_detected', '—')}/{n}) | {_f(r.get('wake_p50'), 2)} |",
            f"| end of speech → transcript, p50 / p95 ms | {_f(o['eos_to_final_ms']['p50'])} / "
            f"{_f(o['eos_to_final_ms']['p95'])} | {_f(te.get('p50'))} / {_f(te.get('p95'))} | "
            f"{_f(r.get('eos_to_final_p50'), 2)} |",
            f"| word error rate | {_f(100 * (o['wer'] or 0), 1)} % | "
            f"{_f(100 * t['wer'], 1) if t.get('wer') is not None else '—'} % | |",
            f"| transcripts before the client's audio-stop | {o['transcripts_before_audio_stop']}/"
            f"{result['utterances']} | 0 (needs audio-stop) | |",
            "| transcripts of enrolled voices with a speaker (the right one) | "
            f"{o.get('speaker_named_on_enrolled_transcripts_pct', '—')} % "
            f"({o.get('speaker_on_enrolled_transcripts_pct', '—')} %) | — (no speaker ID) | |",
        ]
        c, a, q = o["gateway_chunk_us"], o["gateway_answer_us"], o["gateway_request_us"]
        lines += [
            "",
            f"Gateway overhead: per audio-chunk {_f(c['p50'])} / {_f(c['p95'])} µs (p50 / p95, n={c['n']}); "
            f"stage answer → Wyoming event {_f(a['p50'])} / {_f(a['p95'])} µs; request handling "
            f"{_f(q['p50'])} / {_f(q['p95'])} µs per event.",
        ]
    elif "error" in o:
        lines.append(f"| ours failed: {o['error']} | | | |")
    rooms = result.get("two_rooms", {})
    if "trials" in rooms:
        lines += [
            "",
            f"Two rooms, one wake word: {rooms['pipelines_started']} pipelines started for {rooms['utterances']} "
            f"utterances; exactly one, in the louder room: {rooms['one_pipeline_in_the_louder_room']}/"
            f"{rooms['utterances']}.",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 utterances, 2 two-room trials")
    parser.add_argument("--count", type=int, help="utterances in the session")
    parser.add_argument("--no-peers", action="store_true", help="ours only")
    add_out(parser, RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = write_results(args.out, lambda: run(args.quick, count=args.count, do_peers=not args.no_peers))
    print(render(result))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
