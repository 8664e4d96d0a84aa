"""Voice benchmark: our streaming voice path vs the Home Assistant Wyoming peers, same audio, same run.

One session of >= 20 "hey jarvis, <command>" utterances (Piper joe + Debian flite voices, 16 kHz,
known end-of-wake and end-of-speech times; ``benchmarks/voice_media.py``) is streamed in real time,
in 80 ms chunks, to

- **ours**: the real runtime in one process (``sensorium.embedded``: hub + a worker running the
  ``wake``, ``stt`` and ``speaker`` stages, two voices enrolled), fed by the real edge agent
  (``edge.agent.EdgeAgent``: WAV file source → outbox → bus), observed by a
  ``pipeline.client.Client`` — the reasoning loop's own subscriber path through the hub's event log;
- **theirs**: ``wyoming-openwakeword`` and ``wyoming-faster-whisper`` servers from PyPI on loopback,
  run from their own venvs (``scripts/setup.sh``) with the same model files, driven by a
  satellite-like Wyoming client (``benchmarks/peers/client.py``): continuous wake stream; on
  detection, an STT request streamed as spoken with ``AudioStop`` at the endpoint.

The peer decodes with our stt's model settings (tiny.en CT2, int8 on CPU / float16 on CUDA, our
beam size — 1 — and 4 CPU threads), so the ratio measures the architecture, not a setting;
``--peer-beam 5`` gives Home Assistant's automatic x86 beam instead.

Both sides endpoint after the same trailing silence (our stt ``trailing_silence``, 0.7 s like Home
Assistant); the peer gets an ideal endpointer (exactly end of speech + silence, at the next 80 ms
boundary), ours uses its real Silero VAD. Metrics, p50/p95 per side and the ratio ours/theirs:

- wake latency: end of "hey jarvis" in the audio → wake event at the subscriber / client;
- end of speech → final transcript (the peer also: AudioStop → Transcript, its decode alone);
- final transcript → speaker (ours only: the peers have no speaker identification);
- wake CPU: CPU seconds per second of audio, i.e. share of one core per stream;
- word error rate of the command, per side.

Our stt ends a command early (``early_endpoint``, 0.3 s) when its pause decode reads as complete,
and decodes on a 10 s encoder window (``encoder_window``); ``--stt early_endpoint=0 --stt
encoder_window=30s`` measures ours without them (any ``[stages.stt]`` key can be set this way).

Run: ``.venv/bin/python -m benchmarks.voice [--quick] [--device cuda] [--stt KEY=VALUE …]``; prints a table and
writes ``benchmarks/results/voice.json``. ``run(quick=False) -> dict`` is the module API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks.outfile import add_out, checkpoint, write_results
from benchmarks.peers import servers as peers
from benchmarks.voice_media import Session, build_session

RESULTS = Path(__file__).resolve().parent / "results" / "voice.json"
ROOM, EDGE = "kitchen", "kitchen-pi"
CHUNK_MS = 80
log = logging.getLogger("bench.voice")


# ------------------------------------------------------------------------------------ helpers


def stats(values: list[float]) -> dict[str, Any]:
    """p50/p95/mean/n of a list of milliseconds (None entries are misses)."""
    from sensorium.pipeline.metrics import summary

    return summary(values, digits=1, extra=("mean",))


_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen \
seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def _number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    return str(n)


def normalize(text: str) -> str:
    """Lower case, digits as words, no punctuation (so "10%" and "ten percent" compare equal)."""
    text = text.lower().replace("%", " percent")
    text = re.sub(r"\d+", lambda m: " " + _number_words(int(m.group())) + " ", text)
    text = re.sub(r"[^a-z' ]+", " ", text)
    return " ".join(text.split())


def wer(ref: str, hyp: str) -> float:
    """Word error rate of ``hyp`` against ``ref`` after ``normalize``."""
    import jiwer

    r, h = normalize(ref), normalize(hyp)
    if not h:
        return 1.0
    return float(jiwer.wer(r, h))


def _strip_wake(text: str) -> str:
    return re.sub(r"^\W*(hey|hay|a)?\W*jarvis\W*", "", text, flags=re.I)


# ------------------------------------------------------------------------------------- theirs


def run_theirs(
    session: Session,
    warmup: Session,
    *,
    device: str,
    endpoint_s: float,
    beam_size: int,
    cpu_threads: int,
    model: str = "",
) -> dict[str, Any]:
    """Stream the session through the Wyoming peers; per-utterance timings and CPU."""
    compute_type = "float16" if device.startswith("cuda") else "int8"
    opts = peers.PeerOptions(
        device=device, compute_type=compute_type, beam_size=beam_size, cpu_threads=cpu_threads, model=model
    )
    t = time.monotonic()
    with peers.PeerServers(opts) as srv:
        startup_s = time.monotonic() - t
        srv.run_client(warmup.to_json(), endpoint_s=endpoint_s, chunk_ms=CHUNK_MS)  # warm both servers up
        cpu0 = srv.cpu()
        raw = srv.run_client(session.to_json(), endpoint_s=endpoint_s, chunk_ms=CHUNK_MS)
        cpu1 = srv.cpu()
        commands = {name: " ".join(cmd) for name, cmd in srv.commands.items()}
    rows = []
    for _, row, req in client_rows(session, raw):
        t_tr = req.get("t_transcript")
        rows.append(row | {"stop_to_transcript_ms": 1000 * (t_tr - req["t_stop"]) if t_tr is not None else None})
    duration = session.duration
    cpu = {k: (cpu1[k] - cpu0[k]) / duration for k in cpu1 if k in cpu0}
    return {
        "rows": rows,
        "wake_ms": stats([r["wake_ms"] for r in rows]),
        "eos_to_final_ms": stats([r["eos_to_final_ms"] for r in rows]),
        "stop_to_transcript_ms": stats([r["stop_to_transcript_ms"] for r in rows]),
        "speaker_ms": None,
        "wer": _mean([r["wer"] for r in rows]),
        "wake_detected": sum(r["wake_ms"] is not None for r in rows),
        "wake_cpu_core_share": round(cpu.get("wyoming-openwakeword", float("nan")), 4),
        "stt_cpu_core_share": round(cpu.get("wyoming-faster-whisper", float("nan")), 4),
        "startup_s": round(startup_s, 1),
        "client_sender_lag_p95_ms": round(raw["sender_lag_p95_ms"], 2),
        "commands": commands,
        "versions": _peer_versions(),
        "settings": {
            "device": device,
            "compute_type": compute_type,
            "beam_size": beam_size,
            "cpu_threads": cpu_threads,
            "endpoint_s": endpoint_s,
            "threshold": opts.threshold,
            "model": opts.model or "tiny.en (bundled)",
        },
    }


def _peer_versions() -> dict[str, str]:
    import subprocess

    out = {}
    for venv in (peers.WHISPER_VENV, peers.OWW_VENV):
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
        )
        for line in done.stdout.splitlines():
            name, _, version = line.partition("==")
            if name.lower() in (
                "wyoming",
                "wyoming-openwakeword",
                "wyoming-faster-whisper",
                "faster-whisper",
                "ctranslate2",
                "tflite-runtime",
            ):
                out[f"{venv.name}:{name.lower()}"] = version
    return out


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.mean(vals)), 3) if vals else None


# --------------------------------------------------------------------------------------- ours


def _deployment(session_path: Path, stages: list[str], device: str, data_dir: Path, stage_opts: dict) -> Any:
    from sensorium.pipeline.config import from_dict
    from sensorium.registry import available

    classes = available()
    missing = [s for s in stages if s not in classes]
    if missing:
        raise RuntimeError(f"stages not importable here: {', '.join(missing)}")
    raw = {
        "hub": {"address": "inproc://bench-voice"},
        "rooms": {ROOM: {}},
        "edges": {EDGE: {"room": ROOM, "microphone": {"file": str(session_path), "block_ms": CHUNK_MS}}},
        "workers": {"voice": {"stages": stages, "device": device}},
        "stages": {s: stage_opts.get(s, {}) for s in stages},
        "data_dir": str(data_dir),
    }
    budgets = {n: c.default_budget_ms / 1000 for n, c in classes.items()}
    return from_dict(raw, {n: c.Options for n, c in classes.items()}, budgets, "<bench-voice>")


async def _feed(session_path: Path, env: Any) -> float:
    """Play the WAV through the real edge agent (file source → outbox → bus); returns hub time of sample 0.

    The agent stamps each chunk with the capture time of its first sample on the shared clock; the
    first chunk seen on the bus therefore carries the hub time at which the recording "started".
    """
    from sensorium.pipeline.bus import Subscriber

    first = Subscriber(env.endpoints, [f"audio/{ROOM}/{EDGE}"])
    await asyncio.sleep(0.2)  # the subscription must reach the proxy before the first chunk
    try:
        from sensorium.edge.agent import EdgeAgent
    except ImportError:  # no edge agent in this checkout: the same file source, published directly
        EdgeAgent = None
    if EdgeAgent is not None:
        agent = EdgeAgent(env.deployment, EDGE, wav=session_path, hub_address=env.address, clock=env.clock)
        task = asyncio.create_task(agent.run(once=True))
    else:
        task = asyncio.create_task(_publish_file(session_path, env))
    try:
        msg = await first.recv()
        first.close()
        await task
    finally:
        first.close()
        if not task.done():
            task.cancel()
    return msg.time


async def _publish_file(session_path: Path, env: Any) -> None:
    from sensorium.edge.audio import WavFileSource
    from sensorium.pipeline.bus import Publisher
    from sensorium.pipeline.messages import AudioChunk

    pub = Publisher(env.endpoints)
    try:
        async for t, pcm in WavFileSource(session_path, block_ms=CHUNK_MS, clock=env.clock).blocks():
            await pub.publish(AudioChunk(time=t, room=ROOM, source=EDGE, rate=16000, data=pcm))
    finally:
        pub.close()


async def _ours_session(env: Any, session: Session, collect: bool) -> tuple[float, list[tuple[float, Any]]]:
    """Feed one session through a running deployment; (hub time of sample 0, [(arrival, event)])."""
    from sensorium.pipeline.client import Client

    events: list[tuple[float, Any]] = []
    async with Client(env.endpoints) as client:
        await client.wait_connected(10.0)

        async def listen() -> None:
            async for ev in client.events(["wake", "transcript", "speaker"]):
                events.append((env.clock.now(), ev))

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.3)  # let the event subscription settle
        start = await _feed(session.path, env)
        # Wait for the last utterance's final transcript (and its speaker), at most 15 s.
        deadline = time.monotonic() + 15.0
        last_t1 = start + session.utterances[-1].command_start
        while time.monotonic() < deadline:
            if any(getattr(e, "final", False) and e.t1 >= last_t1 for _, e in events):
                await asyncio.sleep(0.5)
                break
            await asyncio.sleep(0.1)
        listener.cancel()
        try:
            await listener
        except asyncio.CancelledError:
            pass
    return start, events if collect else []


def _ours_rows(
    session: Session, start: float, events: list[tuple[float, Any]], trailing_s: float = 0.7
) -> list[dict[str, Any]]:
    from sensorium.pipeline.messages import SpeakerIdentified, Transcript, WakeDetected

    rows = []
    for i, u in enumerate(session.utterances):
        lo, hi = start + (session.utterances[i - 1].window_end if i else 0.0), start + u.window_end
        wakes = [(a, e) for a, e in events if isinstance(e, WakeDetected) and lo <= e.time < hi]
        finals = [(a, e) for a, e in events if isinstance(e, Transcript) and e.final and lo <= e.t1 < hi]
        partials = [e for a, e in events if isinstance(e, Transcript) and not e.final and lo <= e.time < hi]
        row: dict[str, Any] = {
            "utterance": u.name,
            "wake_ms": 1000 * (wakes[0][0] - (start + u.wake_end)) if wakes else None,
            "eos_to_final_ms": None,
            "speaker_ms": None,
            "partials": len(partials),
            "text": "",
            "wer": None,
            "speaker": None,
        }
        if finals:
            a, tr = finals[0]
            row["eos_to_final_ms"] = 1000 * (a - (start + u.speech_end))
            row["endpoint_ms"] = 1000 * (tr.t1 - (start + u.speech_end))
            row["early_endpoint"] = row["endpoint_ms"] < 1000 * trailing_s - 100  # before the trailing silence
            row["endpoint_to_final_ms"] = 1000 * (a - tr.t1)
            row["text"] = tr.text
            row["wer"] = wer(u.command, _strip_wake(tr.text))
            row["speaker"] = tr.speaker
            uid = tr.utterance_id
            spk = [(sa, se) for sa, se in events if isinstance(se, SpeakerIdentified) and se.utterance_id == uid]
            if spk:
                row["speaker_ms"] = 1000 * (spk[0][0] - a)
                row["endpoint_to_speaker_ms"] = 1000 * (spk[0][0] - tr.t1)
                row["speaker"] = spk[0][1].person
                row["speaker_on_final"] = tr.speaker is not None
        rows.append(row)
    return rows


def _stage_threads_cpu(prefix: str) -> float:
    """CPU seconds of this process's threads named ``prefix``* (a stage's ``run_blocking`` executor)."""
    total = 0.0
    for t in threading.enumerate():
        if t.name.startswith(prefix) and t.native_id is not None:
            total += peers.cpu_seconds(os.getpid(), t.native_id)
    return total


def _cpu_pass(
    session: Session, stages: list[str], device: str, data_dir: Path, stage_opts: dict
) -> tuple[float, float]:
    """CPU seconds per audio second while one in-process deployment hears the session.

    Returns (whole process, the first stage's executor threads — where its model calls run).
    """
    from sensorium.embedded import embedded

    async def main() -> tuple[float, float]:
        dep = _deployment(session.path, stages, device, data_dir, stage_opts)
        prefix = f"stage-{stages[0]}_" if stages else "-none-"
        async with embedded(dep, workers=["voice"] if stages else []) as env:
            await asyncio.sleep(1.0)
            c0, s0 = time.process_time(), _stage_threads_cpu(prefix)
            await _feed(session.path, env)
            c1, s1 = time.process_time(), _stage_threads_cpu(prefix)
        return (c1 - c0) / session.duration, (s1 - s0) / session.duration

    return asyncio.run(main())


def run_ours(
    session: Session, warmup: Session, cpu_session: Session, *, device: str, stage_opts: dict, cpu: bool = True
) -> dict[str, Any]:
    """Stream the session through our in-process runtime; per-utterance timings and CPU."""
    from sensorium.embedded import embedded

    stages = ["wake", "stt", "speaker"]
    with tempfile.TemporaryDirectory(prefix="bench-voice-") as tmp:
        data_dir = Path(tmp)
        enrolled = _enroll(data_dir, stage_opts.get("speaker", {}))

        async def main() -> tuple[float, list[tuple[float, Any]], float, str]:
            dep = _deployment(session.path, stages, device, data_dir, stage_opts)
            t = time.monotonic()
            async with embedded(dep, workers=["voice"]) as env:
                startup = time.monotonic() - t
                await _ours_session(env, warmup, collect=False)
                start, events = await _ours_session(env, session, collect=True)
                dev = env.workers[0].device
            return start, events, startup, dev

        start, events, startup_s, used_device = asyncio.run(main())
        rows = _ours_rows(session, start, events, _stt_defaults(stage_opts.get("stt"))["trailing_silence_s"])
        wake_cpu = infra_cpu = model_cpu = None
        if cpu:
            wake_cpu, model_cpu = _cpu_pass(cpu_session, ["wake"], device, data_dir, stage_opts)
            infra_cpu, _ = _cpu_pass(cpu_session, [], device, data_dir, stage_opts)
    return {
        "rows": rows,
        "wake_ms": stats([r["wake_ms"] for r in rows]),
        "eos_to_final_ms": stats([r["eos_to_final_ms"] for r in rows]),
        "endpoint_ms": stats([r.get("endpoint_ms") for r in rows]),
        "endpoint_to_final_ms": stats([r.get("endpoint_to_final_ms") for r in rows]),
        "speaker_ms": stats([r["speaker_ms"] for r in rows]),
        "endpoint_to_speaker_ms": stats([r.get("endpoint_to_speaker_ms") for r in rows]),
        "wer": _mean([r["wer"] for r in rows]),
        "wake_detected": sum(r["wake_ms"] is not None for r in rows),
        "early_endpoints": sum(bool(r.get("early_endpoint")) for r in rows),
        "partials_per_utterance": _mean([r["partials"] for r in rows if r["eos_to_final_ms"] is not None]),
        "wake_cpu_core_share": None if wake_cpu is None else round(wake_cpu, 4),
        "infra_cpu_core_share": None if infra_cpu is None else round(infra_cpu, 4),
        "wake_net_cpu_core_share": None if wake_cpu is None else round(wake_cpu - (infra_cpu or 0.0), 4),
        "wake_model_thread_cpu_core_share": None if model_cpu is None else round(model_cpu, 4),
        "startup_s": round(startup_s, 1),
        "device": used_device,
        "enrolled": enrolled,
        "settings": stage_opts,
    }


def _enroll(data_dir: Path, speaker_opts: dict) -> list[str]:
    """Enroll two of the session's voices (one sentence each, not a benchmark command) into the gallery."""
    try:
        from sensorium.models.gallery import Gallery
        from sensorium.models.speaker import load_encoder
    except ImportError:
        return []
    from benchmarks.voice_media import synthesize

    model = speaker_opts.get("model", "resemblyzer")
    encoder = load_encoder(model, "cpu", speaker_opts.get("cache_dir", ".cache/models"))
    gallery = Gallery(Path(speaker_opts.get("gallery") or data_dir / "gallery.db"))
    people = {"joe": "piper:joe", "sally": "flite:slt"}
    sentence = "the quick brown fox jumps over the lazy dog while the kettle boils in the kitchen"
    for person, voice in people.items():
        pcm = synthesize(sentence, voice)
        gallery.add(person, "voice", encoder.model_id, encoder.embed(pcm.astype(np.int16), 16000))
    return list(people)


# ----------------------------------------------------------------------------------------- run


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return round(ours / theirs, 3)


def run(
    quick: bool = False,
    *,
    device: str = "cpu",
    count: int | None = None,
    do_peers: bool = True,
    do_ours: bool = True,
    peer_beam: int | None = None,
    stt_model: str = "tiny.en",
    stt_opts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the benchmark; returns the result dict (also what ``__main__`` writes to JSON).

    ``stt_opts``: extra ``[stages.stt]`` options for ours (e.g. ``{"early_endpoint": 0}``).
    """
    count = count or (3 if quick else 20)
    session = build_session(count)
    warmup = build_session(1, first=len(session.utterances) + 1)
    cpu_session = build_session(2 if quick else 6)
    stage_opts: dict[str, dict[str, Any]] = {"wake": {"models": ["hey_jarvis"]}, "speaker": {}}
    stage_opts["stt"] = dict(stt_opts or {})
    peer_model = ""
    if stt_model != "tiny.en":
        from sensorium.models.stt import resolve_model

        stage_opts["stt"]["model"] = stt_model
        # The peer gets the very directory ours loads (bundled base is joined into .cache/models once).
        local = resolve_model(stt_model)
        peer_model = str(Path(local).resolve()) if Path(local).is_dir() else local
    ours_stt = _stt_defaults(stage_opts["stt"])
    endpoint_s = ours_stt["trailing_silence_s"]
    beam = peer_beam if peer_beam is not None else ours_stt["beam_size"]
    cpu_threads = ours_stt["cpu_threads"] or 4  # CTranslate2's default is 4 threads, as is the peer's
    result: dict[str, Any] = {
        **run_header("voice", device, quick, session, endpoint_s),
        "chunk_ms": CHUNK_MS,
        "stt_model": stt_model,
    }
    if do_peers:
        reason = peers.missing_reason()
        if reason:
            result["theirs"] = {"skipped": reason}
        else:
            print(f"voice: peers, {count} utterances, {session.duration:.0f} s of audio …", file=sys.stderr)
            result["theirs"] = _guarded(
                run_theirs,
                session,
                warmup,
                device=device,
                endpoint_s=endpoint_s,
                beam_size=beam,
                cpu_threads=cpu_threads,
                model=peer_model,
            )
        checkpoint(result)
    if do_ours:
        print(f"voice: ours, {count} utterances, {session.duration:.0f} s of audio in real time …", file=sys.stderr)
        result["ours"] = _guarded(run_ours, session, warmup, cpu_session, device=device, stage_opts=stage_opts)
    o, t = result.get("ours", {}), result.get("theirs", {})
    if "rows" in o and "rows" in t:
        result["ratio_ours_over_theirs"] = {
            "wake_p50": _ratio(o["wake_ms"]["p50"], t["wake_ms"]["p50"]),
            "wake_p95": _ratio(o["wake_ms"]["p95"], t["wake_ms"]["p95"]),
            "eos_to_final_p50": _ratio(o["eos_to_final_ms"]["p50"], t["eos_to_final_ms"]["p50"]),
            "eos_to_final_p95": _ratio(o["eos_to_final_ms"]["p95"], t["eos_to_final_ms"]["p95"]),
            "wake_cpu": _ratio(o["wake_cpu_core_share"], t["wake_cpu_core_share"]),
            "wake_cpu_net": _ratio(o["wake_net_cpu_core_share"], t["wake_cpu_core_share"]),
        }
        r = result["ratio_ours_over_theirs"]
        result["goals"] = {
            "wake_latency_ratio_le_1": r["wake_p50"] is not None and r["wake_p50"] <= 1.0,
            "eos_to_final_ratio_le_0.5": r["eos_to_final_p50"] is not None and r["eos_to_final_p50"] <= 0.5,
        }
    return result


def run_header(name: str, device: str, quick: bool, session: Session, endpoint_s: float) -> dict[str, Any]:
    """What a voice run's results start with: the benchmark, when, the host and its load, the session."""
    return {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        },
        "device": device,
        "quick": quick,
        "utterances": len(session.utterances),
        "audio_s": round(session.duration, 1),
        "endpoint_silence_s": endpoint_s,
    }


def client_rows(session: Session, raw: dict[str, Any]) -> list[tuple[Any, dict[str, Any], dict[str, Any]]]:
    """Per utterance of ``session``, what the Wyoming client (``peers/client.py``) measured: the utterance, its
    row (wake and end-of-speech → transcript latency, text, WER, error) and the client's STT request."""
    out = []
    requests = {r["utterance"]: r for r in raw["stt"]}
    for i, u in enumerate(session.utterances):
        lo = session.utterances[i - 1].window_end if i else 0.0
        dets = [d["t"] for d in raw["detections"] if lo <= d["t"] < u.window_end]
        req = requests.get(u.name, {})
        t_tr = req.get("t_transcript")
        text = req.get("text", "")
        row = {
            "utterance": u.name,
            "wake_ms": 1000 * (dets[0] - u.wake_end) if dets else None,
            "eos_to_final_ms": 1000 * (t_tr - u.speech_end) if t_tr is not None else None,
            "text": text,
            "wer": wer(u.command, _strip_wake(text)) if t_tr is not None else None,
            "error": req.get("error"),
        }
        out.append((u, row, req))
    return out


def _guarded(fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run one side; a failure is recorded (and printed) instead of losing the other side's numbers."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}


def _stt_defaults(opts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Our stt stage's settings (defaults plus ``opts``) that the peer must share for a fair comparison."""
    try:
        from sensorium.registry import stage_class

        o = stage_class("stt").Options(**(opts or {}))
        return {
            "trailing_silence_s": o.seconds("trailing_silence"),
            "beam_size": o.beam_size,
            "cpu_threads": o.cpu_threads,
        }
    except (ImportError, KeyError):
        return {"trailing_silence_s": 0.7, "beam_size": 5, "cpu_threads": 0}


# ---------------------------------------------------------------------------------------- table


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}"
    return str(v)


def table(result: dict[str, Any]) -> str:
    """The human-readable summary."""
    o, t = result.get("ours", {}), result.get("theirs", {})
    r = result.get("ratio_ours_over_theirs", {})
    lines = [
        f"voice benchmark — {result['utterances']} utterances, {result['audio_s']} s audio, whisper "
        f"{result.get('stt_model', 'tiny.en')} on {result['device']}, {result['host']['cpus']} CPUs, "
        f"load {result['host']['load_avg_1m']}",
        f"{'metric':38s} {'ours':>12s} {'theirs':>12s} {'ours/theirs':>12s}",
    ]

    def row(name: str, ov: Any, tv: Any, rv: Any = None) -> None:
        lines.append(f"{name:38s} {_fmt(ov):>12s} {_fmt(tv):>12s} {_fmt(rv):>12s}")

    def g(d: dict, key: str, sub: str) -> Any:
        v = d.get(key)
        return v.get(sub) if isinstance(v, dict) else None

    if "skipped" in t:
        lines.append(f"theirs skipped: {t['skipped']}")
    for side, d in (("ours", o), ("theirs", t)):
        if "error" in d:
            lines.append(f"{side} failed: {d['error']}")
    row("wake detected (of N)", o.get("wake_detected"), t.get("wake_detected"))
    row("wake latency p50 ms", g(o, "wake_ms", "p50"), g(t, "wake_ms", "p50"), r.get("wake_p50"))
    row("wake latency p95 ms", g(o, "wake_ms", "p95"), g(t, "wake_ms", "p95"), r.get("wake_p95"))
    row(
        "end of speech → final p50 ms",
        g(o, "eos_to_final_ms", "p50"),
        g(t, "eos_to_final_ms", "p50"),
        r.get("eos_to_final_p50"),
    )
    row(
        "end of speech → final p95 ms",
        g(o, "eos_to_final_ms", "p95"),
        g(t, "eos_to_final_ms", "p95"),
        r.get("eos_to_final_p95"),
    )
    row("  endpoint found p50 ms (ours VAD)", g(o, "endpoint_ms", "p50"), result.get("endpoint_silence_s", 0) * 1000)
    row("  endpoints before trailing silence", o.get("early_endpoints"), 0)
    row("  endpoint → final p50 ms", g(o, "endpoint_to_final_ms", "p50"), g(t, "stop_to_transcript_ms", "p50"))
    row("final → speaker p50 ms", g(o, "speaker_ms", "p50"), "n/a (none)")
    row("final → speaker p95 ms", g(o, "speaker_ms", "p95"), "n/a (none)")
    row("  endpoint → speaker event p50 ms", g(o, "endpoint_to_speaker_ms", "p50"), "n/a (none)")
    row(
        "wake CPU, share of one core/stream",
        o.get("wake_cpu_core_share"),
        t.get("wake_cpu_core_share"),
        r.get("wake_cpu"),
    )
    row("  net of hub+bus+edge in-process", o.get("wake_net_cpu_core_share"), None, r.get("wake_cpu_net"))
    row("  of which the model thread", o.get("wake_model_thread_cpu_core_share"), None)
    row("command WER (mean)", o.get("wer"), t.get("wer"))
    row("partials per utterance", o.get("partials_per_utterance"), 0)
    return "\n".join(lines)


def _option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` → (key, value), the value as JSON where it parses (numbers, true/false) else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--stt expects KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 utterances, short CPU passes")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (our stt/speaker and the peer's whisper)")
    parser.add_argument("--count", type=int, default=None, help="utterances (default 20, quick 3)")
    parser.add_argument("--no-peers", action="store_true", help="skip the Wyoming peers")
    parser.add_argument("--no-ours", action="store_true", help="skip our runtime")
    parser.add_argument("--peer-beam", type=int, default=None, help="peer beam size (default: ours)")
    parser.add_argument(
        "--stt-model", default="tiny.en", help="whisper model for both sides: tiny.en (bundled), base (bundled), a dir…"
    )
    parser.add_argument(
        "--stt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of our stt stage, e.g. early_endpoint=0 or encoder_window=30s (repeatable)",
    )
    add_out(parser, RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = write_results(  # first: the numbers are kept whatever follows
        args.out,
        lambda: run(
            args.quick,
            device=args.device,
            count=args.count,
            do_peers=not args.no_peers,
            do_ours=not args.no_ours,
            peer_beam=args.peer_beam,
            stt_model=args.stt_model,
            stt_opts=dict(_option(kv) for kv in args.stt),
        ),
    )
    print(table(result))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())


#: SUMMARY.md rendering (benchmarks/__main__.py convention).
render = table
