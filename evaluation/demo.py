"""``sensorium demo``: the whole pipeline in one process on bundled models and media.

With media (``--audio ROOM=FILE.wav``, ``--video ROOM=DIR_OR_VIDEO``) each room gets an edge agent
playing the file in real time; without, the bundled sample session (two voices, two people on
camera) is built once and replayed. Hub, workers, the built-in agent and the edges' players all
run as in a real deployment (same classes), over inproc sockets. Events print as they arrive and
can be written as JSON lines; at the end a latency table and the voice-to-voice breakdown print.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sensorium.deployment import deployment_from_dict
from sensorium.embedded import Embedded, embedded
from sensorium.pipeline.bus import Subscriber
from sensorium.pipeline.client import Client
from sensorium.pipeline.codec import to_dict, to_json
from sensorium.pipeline.config import Deployment
from sensorium.pipeline.messages import Event, Message, Say, TtsAudio
from sensorium.pipeline.metrics import percentiles

log = logging.getLogger("sensorium.demo")

VOICE_STAGES = ["wake", "arbiter", "stt", "speaker"]
VISION_STAGES = ["detect", "face"]
#: The demo's presence timeout: short, so a person who walks out of the media is seen to leave.
DEMO_LEFT_AFTER = 5.0


def demo_deployment(
    audio: dict[str, Path],
    video: dict[str, Path],
    out_dir: Path,
    *,
    talk: bool = True,
    stage_overrides: dict[str, dict[str, Any]] | None = None,
    gallery: Path | None = None,
) -> Deployment:
    """A one-box deployment with an edge node per room that plays the given files.

    Speaker and face stages read ``gallery`` (default: ``out_dir``/gallery.db).
    """
    rooms = sorted(set(audio) | set(video))
    edges: dict[str, dict[str, Any]] = {}
    for room in rooms:
        edge: dict[str, Any] = {"room": room}
        if room in audio:
            edge["microphone"] = {"file": str(audio[room]), "block_ms": 80}
        if room in video:
            edge["cameras"] = {f"{room}-cam": {"source": str(video[room]), "fps": 5, "width": 640}}
        if talk:
            edge["playback"] = {"wav_dir": str(out_dir / "tts"), "rate": 22050}
        edges[f"{room}-pi"] = edge
    stages: list[str] = []
    if audio:
        stages += VOICE_STAGES
    if video:
        stages += VISION_STAGES
    stages.append("presence")
    if talk:
        stages.append("tts")
    overrides: dict[str, dict[str, Any]] = {"presence": {"left_after": f"{DEMO_LEFT_AFTER}s", "present_every": "20s"}}
    if gallery is not None:
        overrides |= {s: {"gallery": str(gallery)} for s in ("speaker", "face") if s in stages}
    for name, table in (stage_overrides or {}).items():
        overrides[name] = overrides.get(name, {}) | table
    raw = {
        "data_dir": str(out_dir),
        "hub": {"heartbeat": "250ms", "down_after": "2s"},
        "rooms": {r: {} for r in rooms},
        "edges": edges,
        "workers": {"local": {"device": "cpu", "stages": stages}},
        "stages": overrides,
    }
    return deployment_from_dict(raw, "<demo>")


@dataclass
class Collector:
    """Receives every event (exactly once) and the talk-back traffic, with arrival times."""

    env: Embedded
    out: TextIO | None = None
    quiet: bool = False
    events: list[tuple[float, Event]] = field(default_factory=list)
    says: dict[str, float] = field(default_factory=dict)
    first_audio: dict[str, float] = field(default_factory=dict)
    last_event: float = field(default_factory=time.monotonic)

    async def run_events(self) -> None:
        async with Client(self.env.endpoints, name="demo-events", clock=self.env.clock) as client:
            async for ev in client.events(since=0):
                now = self.env.clock.now()
                self.events.append((now, ev))
                self.last_event = time.monotonic()
                if self.out is not None:
                    self.out.write(to_json(ev).decode() + "\n")
                    self.out.flush()
                if not self.quiet:
                    print(_pretty(ev), flush=True)

    async def run_talk(self) -> None:
        sub = Subscriber(self.env.endpoints, ["say/", "tts_audio/"])
        try:
            while True:
                msg: Message = await sub.recv()
                now = self.env.clock.now()
                if isinstance(msg, Say) and msg.answer_id not in self.says:
                    self.says[msg.answer_id] = now
                elif isinstance(msg, TtsAudio) and msg.answer_id not in self.first_audio:
                    self.first_audio[msg.answer_id] = now
        finally:
            sub.close()

    def of(self, kind: str) -> list[tuple[float, Any]]:
        return [(t, e) for t, e in self.events if to_dict(e)["type"] == kind]


def _pretty(ev: Event) -> str:
    d = to_dict(ev)
    t = d.pop("type")
    for k in ("seq", "time", "source", "room", "words", "boxes"):
        d.pop(k, None)
    body = " ".join(f"{k}={v!r}" for k, v in d.items() if v not in ("", None, [], 0, 0.0))
    return f"[{ev.seq:>4}] {t:<16} {ev.room:<12} {body}"


def voice_breakdown(c: Collector) -> dict[str, dict[str, float]]:
    """Per utterance: end of speech → final transcript → speaker → agent first token → TTS first audio.

    End of speech is the end of the last recognised word (whisper's word timing), so the numbers
    include the endpointer's wait for silence.
    """
    finals = [(t, e) for t, e in c.of("transcript") if e.final]
    speakers = {e.utterance_id: t for t, e in c.of("speaker")}
    wakes = c.of("wake")
    rows: dict[str, list[float]] = defaultdict(list)
    for t_final, tr in finals:
        # end of speech: the last recognised word's end (the endpoint t1 comes a pause later)
        end = tr.t0 + tr.words[-1].end if tr.words else (tr.t1 or tr.time)
        rows["end of speech → final transcript"].append(t_final - end)
        if tr.utterance_id in speakers:
            rows["end of speech → speaker"].append(speakers[tr.utterance_id] - end)
        before = [
            t_w - w.time for t_w, w in wakes if w.room == tr.room and w.time <= tr.t0 + 3.0 and w.time >= tr.t0 - 5
        ]
        if before:
            rows["end of wake word → wake event"].append(before[-1])
        after = sorted((t, a) for a, t in c.says.items() if t >= t_final and t - t_final < 30)
        if after:
            t_say, answer = after[0]
            rows["final transcript → agent first text"].append(t_say - t_final)
            if answer in c.first_audio:
                rows["agent first text → TTS first audio"].append(c.first_audio[answer] - t_say)
                rows["end of speech → first TTS audio (voice-to-voice)"].append(c.first_audio[answer] - end)
    return {
        k: {n: v * 1000 for n, v in percentiles(vs, (50, 95)).items() if n != "n"} | {"n": len(vs)}
        for k, vs in rows.items()
    }


def print_tables(env: Embedded, c: Collector, file: TextIO = sys.stdout) -> None:
    rows = env.summary()
    print("\nStage latency (from input capture time, hub clock)", file=file)
    print(
        f"{'stage':<10} {'device':<6} {'inputs':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'budget':>7} {'drops':>6} {'viol':>5}  ladder",
        file=file,
    )
    for r in rows:
        print(
            f"{r['stage']:<10} {r['device']:<6} {r['inputs']:>7} {r.get('p50_ms', 0):>8.1f} {r.get('p95_ms', 0):>8.1f} "
            f"{r.get('p99_ms', 0):>8.1f} {r.get('max_ms', 0):>8.1f} {r['budget_ms']:>7.0f} {r['dropped']:>6} "
            f"{r['violations']:>5}  {' '.join(r['ladder']) or '-'}",  # type: ignore[arg-type]
            file=file,
        )
    vb = voice_breakdown(c)
    if vb:
        print("\nVoice-to-voice breakdown (ms)", file=file)
        for k, v in vb.items():
            print(f"  {k:<52} p50 {v.get('p50', 0):>7.0f}  p95 {v.get('p95', 0):>7.0f}  n={v['n']}", file=file)


async def _settle(env: Embedded, c: Collector, quiet_s: float, max_s: float, min_s: float = 0.0) -> None:
    """Wait for stages to drain and events to stop arriving (final transcripts, answers, presence)."""
    start = time.monotonic()
    deadline = start + max_s
    await env.drain(max_s)
    while time.monotonic() < deadline and (
        time.monotonic() - c.last_event < quiet_s or time.monotonic() - start < min_s
    ):
        await asyncio.sleep(0.1)


async def run_media(
    deployment: Deployment,
    *,
    events_json: Path | None = None,
    agent: bool = True,
    speed: float = 1.0,
    quiet: bool = False,
    settle_s: float = 4.0,
    max_settle_s: float = 30.0,
    record: Path | None = None,
) -> tuple[list[Event], list[dict[str, object]], dict[str, dict[str, float]]]:
    """Play each edge's files through an embedded deployment; returns events, stage summary, breakdown."""
    from sensorium.edge.agent import EdgeAgent

    out = open(events_json, "w") if events_json else None
    try:
        async with embedded(deployment) as env, recording_if(env, record):
            c = Collector(env, out=out, quiet=quiet)
            tasks = [asyncio.create_task(c.run_events()), asyncio.create_task(c.run_talk())]
            if agent:
                from sensorium.apps.agent import run_builtin_agent

                tasks.append(asyncio.create_task(run_builtin_agent(env.endpoints, clock=env.clock)))
            await asyncio.sleep(0.5)
            edges = [
                EdgeAgent(deployment, name, hub_address=env.address, clock=env.clock, speed=speed)
                for name in deployment.edges
            ]
            await asyncio.gather(*(e.run(once=True) for e in edges))
            # with cameras, wait long enough to see people leave (presence's left_after + a margin)
            cams = any(e.cameras for e in deployment.edges.values())
            await _settle(env, c, settle_s, max_settle_s, DEMO_LEFT_AFTER + 2.5 if cams else 0.0)
            for e in edges:
                with contextlib.suppress(Exception):
                    await e.stop()  # type: ignore[attr-defined]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            summary = env.summary()
            print_tables(env, c)
            return [e for _, e in c.events], summary, voice_breakdown(c)
    finally:
        if out is not None:
            out.close()


def recording_if(env: Embedded, path: Path | None) -> contextlib.AbstractAsyncContextManager[object]:
    """Record the embedded bus to MCAP while the block runs, if ``path`` is given."""
    if path is None:
        return contextlib.nullcontext()
    from sensorium.pipeline.recorder import recording

    return recording(env.endpoints, path, clock=env.clock)


def parse_media(items: list[str] | None, flag: str) -> dict[str, Path]:
    """``ROOM=PATH`` pairs → {room: path}; ValueError naming the bad item."""
    out: dict[str, Path] = {}
    for item in items or []:
        room, sep, path = item.partition("=")
        if not sep or not room or not path:
            raise ValueError(f"{flag} {item!r}: expected ROOM=PATH")
        if not Path(path).exists():
            raise ValueError(f"{flag} {item!r}: {path} does not exist")
        out[room] = Path(path)
    return out


def enroll_pairs(items: list[str], gallery: Path) -> int:
    """Enrol ``NAME=FILE`` pairs (a .wav is a voice, anything else a face) as ``sensorium enroll`` does.

    One ``enroll`` per person with all their files; each model loads once for all of them.
    """
    from sensorium.enrollment import Enroller, enroll

    people: dict[str, tuple[list[str], list[str]]] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--enroll {item!r}: expected NAME=FILE")
        voices, faces = people.setdefault(name, ([], []))
        (voices if path.lower().endswith(".wav") else faces).append(path)
    models = Enroller()
    for name, (voices, faces) in people.items():
        rc = enroll(name, gallery_path=str(gallery), voice=voices, face=faces, enroller=models)
        if rc != 0:
            return rc
    return 0


def describe_gallery(gallery: Path) -> str:
    """One line: which gallery the demo reads, who is in it, and how to enrol someone there."""
    from sensorium.enrollment import enroll_command
    from sensorium.models.gallery import Gallery

    people: dict[str, dict[str, int]] = {}
    if gallery.exists():
        with Gallery(gallery) as g:
            people = g.people()
    if not people:
        return f"demo: gallery {gallery}: nobody enrolled (enrol: {enroll_command('both', gallery=gallery)})"
    who = ", ".join(f"{p} ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})" for p, kinds in people.items())
    return f"demo: gallery {gallery}: {who}"


def summary_json(summary: list[dict[str, object]], breakdown: dict[str, dict[str, float]]) -> str:
    """The demo's numbers as JSON."""
    return json.dumps({"stages": summary, "voice_to_voice": breakdown}, indent=2)
