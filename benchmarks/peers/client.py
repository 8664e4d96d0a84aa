"""Home Assistant-style satellite that feeds a session file to the Wyoming peers in real time.

Runs under ``.venv-peers/bin/python`` (wyoming 1.10.x), never in the project's venv:

    .venv-peers/bin/python benchmarks/peers/client.py --session S.json --wake-uri tcp://127.0.0.1:P \
        --stt-uri tcp://127.0.0.1:Q --out result.json

What it models (the path of a Wyoming satellite in Home Assistant):
- one wake connection that gets the microphone stream for the whole session, in 80 ms chunks at
  real-time pace (`Detect` → `AudioStart` → `AudioChunk`…); detections come back as `Detection`;
- on the first detection inside an utterance, a new STT request (`Transcribe` → `AudioStart`), fed
  the audio from the end of the wake word (a satellite's pre-roll, so the peer is not penalised for
  wake latency) and then every chunk as it is spoken; `AudioStop` goes out at the endpoint —
  end of speech plus the endpoint silence (0.7 s in Home Assistant), at the first chunk boundary
  past it, as a VAD on 80 ms chunks would — and the `Transcript` is the final result. With
  ``--read-early`` it reads while it streams and stops at the transcript, as a satellite does with a
  server that endpoints itself (``requires_external_vad: false``).

All times in the output are seconds on the session's audio clock: 0 = the moment the first sample
was "spoken", so audio time T is wall time ``t0 + T`` and a latency is ``arrival - T``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
import wave
from pathlib import Path
from typing import Any

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncClient
from wyoming.wake import Detect, Detection

RATE = 16000
WIDTH = 2


class Satellite:
    """Streams one session to the wake and STT servers and records when answers arrive."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        session = json.loads(Path(args.session).read_text())
        self.utterances: list[dict[str, Any]] = session["utterances"]
        with wave.open(session["path"], "rb") as w:
            if (w.getframerate(), w.getsampwidth(), w.getnchannels()) != (RATE, WIDTH, 1):
                raise SystemExit(f"{session['path']}: need 16 kHz 16-bit mono")
            self.pcm = w.readframes(w.getnframes())
        self.chunk_samples = int(RATE * args.chunk_ms / 1000)
        self.chunk_bytes = self.chunk_samples * WIDTH
        self.n_chunks = len(self.pcm) // self.chunk_bytes
        self.t0 = 0.0  # monotonic time of audio time 0
        self.detections: list[dict[str, Any]] = []
        self.requests: dict[str, dict[str, Any]] = {}  # utterance name -> STT request record
        self.stt_tasks: list[asyncio.Task[None]] = []

    def now(self) -> float:
        """Seconds on the audio clock."""
        return time.monotonic() - self.t0

    def chunk(self, k: int) -> bytes:
        return self.pcm[k * self.chunk_bytes : (k + 1) * self.chunk_bytes]

    def chunk_end(self, k: int) -> float:
        return (k + 1) * self.chunk_samples / RATE

    def utterance_at(self, t: float) -> dict[str, Any] | None:
        prev_end = 0.0
        for u in self.utterances:
            if prev_end <= t < u["window_end"]:
                return u
            prev_end = u["window_end"]
        return None

    async def read_wake(self, client: AsyncClient) -> None:
        while True:
            event = await client.read_event()
            if event is None:
                return
            if Detection.is_type(event.type):
                det = Detection.from_event(event)
                t = self.now()
                self.detections.append({"t": t, "name": det.name, "timestamp_ms": det.timestamp})
                u = self.utterance_at(t)
                if u is not None and u["name"] not in self.requests and t < u["speech_end"] + self.args.endpoint_s:
                    self.start_stt(u, t)

    def start_stt(self, u: dict[str, Any], t_detect: float) -> None:
        rec: dict[str, Any] = {"utterance": u["name"], "t_detect": t_detect, "queue": asyncio.Queue()}
        # Pre-roll: every chunk already spoken after the end of the wake word.
        spoken = int(t_detect * RATE) // self.chunk_samples
        first = int(u["wake_end"] * RATE) // self.chunk_samples
        # The endpoint: the chunk that ends at the first boundary at or after end of speech + silence.
        rec["stop_chunk"] = int(-(-(u["speech_end"] + self.args.endpoint_s) * RATE // self.chunk_samples)) - 1
        for k in range(first, min(spoken, rec["stop_chunk"] + 1)):
            rec["queue"].put_nowait(self.chunk(k))
        rec["next_chunk"] = spoken
        if spoken > rec["stop_chunk"]:
            rec["queue"].put_nowait(None)
            rec["stopped"] = True
        self.requests[u["name"]] = rec
        self.stt_tasks.append(asyncio.create_task(self.run_stt(rec)))

    async def run_stt(self, rec: dict[str, Any]) -> None:
        try:
            async with AsyncClient.from_uri(self.args.stt_uri) as client:
                await client.write_event(Transcribe(language=self.args.language).event())
                await client.write_event(AudioStart(rate=RATE, width=WIDTH, channels=1).event())
                # --read-early: a satellite of a server without external VAD reads while it streams and
                # stops streaming at the transcript (which may come before its own endpoint).
                reader = asyncio.create_task(self.read_transcript(client, rec)) if self.args.read_early else None
                while reader is None or not reader.done():
                    get = asyncio.ensure_future(rec["queue"].get())
                    await asyncio.wait({get} | ({reader} if reader else set()), return_when=asyncio.FIRST_COMPLETED)
                    if not get.done():
                        get.cancel()
                        break
                    data = get.result()
                    if data is None:
                        break
                    await client.write_event(AudioChunk(rate=RATE, width=WIDTH, channels=1, audio=data).event())
                await client.write_event(AudioStop().event())
                rec["t_stop"] = self.now()
                await (reader if reader is not None else self.read_transcript(client, rec))
        except Exception as exc:  # a broken peer is a result to report, not a crash of the benchmark
            rec["error"] = f"{type(exc).__name__}: {exc}"

    async def read_transcript(self, client: AsyncClient, rec: dict[str, Any]) -> None:
        while True:
            event = await client.read_event()
            if event is None:
                rec["error"] = "connection closed before a transcript"
                return
            if Transcript.is_type(event.type):
                rec["t_transcript"] = self.now()
                rec["text"] = Transcript.from_event(event).text.strip()
                rec["speaker"] = (event.data or {}).get("speaker")  # ours names who spoke; the peers cannot
                return

    async def run(self) -> dict[str, Any]:
        async with AsyncClient.from_uri(self.args.wake_uri) as wake:
            await wake.write_event(Detect(names=[self.args.wake_word]).event())
            await wake.write_event(AudioStart(rate=RATE, width=WIDTH, channels=1, timestamp=0).event())
            reader = asyncio.create_task(self.read_wake(wake))
            self.t0 = time.monotonic() + 0.2
            lag = []
            for k in range(self.n_chunks):
                # Chunk k is available once its last sample has been "spoken".
                due = self.t0 + self.chunk_end(k)
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                lag.append(time.monotonic() - due)
                data = self.chunk(k)
                ts = int(self.chunk_end(k) * 1000)
                await wake.write_event(AudioChunk(rate=RATE, width=WIDTH, channels=1, audio=data, timestamp=ts).event())
                for rec in self.requests.values():
                    if rec["next_chunk"] <= k and "stopped" not in rec:
                        rec["queue"].put_nowait(data)
                        rec["next_chunk"] = k + 1
                        if k >= rec["stop_chunk"]:
                            rec["queue"].put_nowait(None)
                            rec["stopped"] = True
            await wake.write_event(AudioStop().event())
            if self.stt_tasks:
                await asyncio.wait(self.stt_tasks, timeout=60)
            reader.cancel()
        requests = []
        for rec in self.requests.values():
            out = {k: v for k, v in rec.items() if k not in ("queue", "next_chunk", "stop_chunk", "stopped")}
            requests.append(out)
        lag.sort()
        return {
            "detections": self.detections,
            "stt": requests,
            # nearest rank, as pipeline.metrics.percentile (this runs in the peers' venv, without the project)
            "sender_lag_p95_ms": 1000 * lag[max(0, math.ceil(0.95 * len(lag)) - 1)] if lag else 0.0,
            "chunk_ms": self.args.chunk_ms,
            "endpoint_s": self.args.endpoint_s,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--session", required=True, help="session JSON from benchmarks.voice_media")
    parser.add_argument("--wake-uri", required=True)
    parser.add_argument("--stt-uri", required=True)
    parser.add_argument("--wake-word", default="hey_jarvis")
    parser.add_argument("--language", default="en")
    parser.add_argument("--chunk-ms", type=int, default=80)
    parser.add_argument("--endpoint-s", type=float, default=0.7, help="silence after speech before AudioStop")
    parser.add_argument("--read-early", action="store_true", help="read while streaming; stop at a transcript")
    parser.add_argument("--out", required=True, help="where to write the result JSON")
    args = parser.parse_args()
    result = asyncio.run(Satellite(args).run())
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
