"""Vision benchmark: detector backends, whole frames vs motion regions, 1/4/8 cameras at 5 fps each.

Three parts, one run:

1. **Backends**: one inference of the person model at 640 and 320 px on each backend (PyTorch,
   ONNX Runtime, OpenVINO; TensorRT / ONNX Runtime CUDA with ``--device cuda:0``): wall and CPU time,
   median and p95, and what the first load cost (export included) against a cached one.
2. **Real time** through the runtime (``pipeline.runtime.StageRunner``: its queues, latest-frame-wins,
   late drops and degrade ladder): N cameras play the generated walking-people clip
   (``benchmarks/vision_media.py``; each camera starts at another point of it) at 5 fps into
   detect → face → presence, for every backend, with whole frames ("full", what detect did before)
   and with motion regions. Reported: frames/s answered, dropped share (frames without an answer /
   frames published), frame → presence latency p50/p95 (capture → the presence stage has applied that
   frame's detections), CPU share of the whole process (all stages, in % of one core) and how it splits
   over threads (each stage's own, the event loop, library pools), the load average, person recall
   against full-frame detection (PyTorch, whole frame, every clip frame, no time limit; a person counts
   as found with IoU >= 0.5), what the detector ran (none / regions / full) and the degrade moves.
3. **Face gating**: the clip through detect (regions) → face without time limits, with the gate
   (faceless tracks looked at again only when they come closer or after ``retry_s``) and without:
   looks, embeddings, seconds in the face stage, and which tracks were recognized as the enrolled
   person.

OpenVINO runs in each of ``--precisions``: ``auto`` is this CPU's own choice (bfloat16 on CPUs with
AVX-512 BF16 or AMX); ``f32`` and ``int8`` play a CPU without bfloat16 (AVX2 only, the common mini-PC)
through ``SENSORIUM_OPENVINO_PRECISION=f32``: ``f32`` is what such a CPU runs by default, ``int8`` the
stage's ``precision = "int8"`` there (NNCF's INT8 at each input size where it passes its check, float32
where not). Started with ``ONEDNN_MAX_CPU_ISA=AVX2`` the whole run gets that CPU's speed too. The rows
say what ran (``openvino 640 bf16`` / ``int8`` / ``f32``).

Run: ``.venv/bin/python -m benchmarks.vision [--quick] [--device cuda:0] [--backends torch,openvino]
[--cameras 1,4] [--precisions auto,f32,int8]``; prints tables and writes ``benchmarks/results/vision.json``.
``run(quick=False) -> dict`` is the module API. Numbers taken on a busy machine are not final: say where they came from.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks import vision_media
from benchmarks.outfile import add_out, checkpoint, run_and_report

RESULTS = Path(__file__).resolve().parent / "results" / "vision.json"
FPS = vision_media.FPS
WIDTH, HEIGHT = vision_media.WIDTH, vision_media.HEIGHT
MODES = ("full", "regions")
log = logging.getLogger("bench.vision")


def _pct(values: list[float], scale: float = 1000.0) -> dict[str, float | int | None]:
    from sensorium.pipeline.metrics import summary

    s = summary(values, scale=scale, digits=1)
    return {k: v for k, v in s.items() if k != "n"} if values else {}


def _thread_cpu() -> dict[int, float]:
    """CPU seconds of each thread of this process (Linux; {} elsewhere)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError, ValueError):
                stat = Path(f"/proc/self/task/{tid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _cpu_by_thread(before: dict[int, float], after: dict[int, float], wall: float) -> dict[str, float]:
    """Share of one core per kind of thread: the stages' own threads, the event loop, library pools."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for tid, cpu in after.items():
        name = names.get(tid, "")
        kind = (
            "event loop"
            if name == "MainThread"
            else name.removeprefix("stage-").rsplit("_", 1)[0]
            if name.startswith("stage-")
            else "other Python threads"
            if name
            else "library threads"
        )
        out[kind] = out.get(kind, 0.0) + cpu - before.get(tid, 0.0)
    return {k: round(v / wall, 3) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v > 0}


def _backends_for(device: str) -> tuple[str, ...]:
    return ("torch", "onnxruntime", "tensorrt") if device.startswith("cuda") else ("torch", "onnxruntime", "openvino")


# ------------------------------------------------------------------------------------------ media


class Cameras:
    """N cameras playing the walking clip, each from another point of it."""

    def __init__(self, n: int) -> None:
        self.jpegs = vision_media.clip_jpegs()
        self.n = n
        self.offset = [round(c * len(self.jpegs) / max(n, 1)) for c in range(n)]
        self.seq = [0] * n

    @staticmethod
    def room(c: int) -> str:
        return f"room{c}"

    def index(self, c: int, seq: int) -> int:
        """Clip frame shown by camera ``c`` as its frame number ``seq``."""
        return (self.offset[c] + seq - 1) % len(self.jpegs)

    def frame(self, c: int, now: float) -> Any:
        from sensorium.pipeline.messages import VideoFrame

        self.seq[c] += 1
        data = self.jpegs[self.index(c, self.seq[c])]
        return VideoFrame(
            seq=self.seq[c], time=now, room=self.room(c), source="cam", width=WIDTH, height=HEIGHT, data=data
        )


class Reference:
    """Full-frame PyTorch detection of each clip frame, computed once when first asked for."""

    def __init__(self) -> None:
        from sensorium.models.detector import PersonDetector

        self.detector = PersonDetector(backend="torch")
        self.boxes: dict[int, list[tuple[float, float, float, float]]] = {}

    def __call__(self, index: int) -> list[tuple[float, float, float, float]]:
        import cv2

        if index not in self.boxes:
            img = cv2.imdecode(np.frombuffer(vision_media.clip_jpegs()[index], np.uint8), cv2.IMREAD_COLOR)
            self.boxes[index] = [b.xyxy for b in self.detector.detect([img])[0]]
        return self.boxes[index]


def _gallery(path: Path) -> None:
    """Enrol the astronaut (she walks through the clip) so presence has someone to name."""
    from sensorium.models.faces import FacePipeline
    from sensorium.models.gallery import Gallery

    img = vision_media._pkg("skimage", "data/astronaut.png")
    pipe = FacePipeline(recognizer="facenet")
    emb, model_id = pipe.embed_image_file(img)
    pipe.close()
    with Gallery(path) as g:
        g.add("eileen", "face", model_id, emb)


# ------------------------------------------------------------------------------------- backends


@contextlib.contextmanager
def playing(precision: str) -> Iterator[str]:
    """The stage's ``precision`` setting for a benchmark precision: "auto" as it is; "f32" and "int8" play a CPU
    without bfloat16 (``SENSORIUM_OPENVINO_PRECISION=f32``), with the stage on "auto" / "int8"."""
    from sensorium.models.backends import PRECISION_ENV

    before = os.environ.get(PRECISION_ENV)
    if precision in ("int8", "f32"):
        os.environ[PRECISION_ENV] = "f32"
    else:
        os.environ.pop(PRECISION_ENV, None)
    try:
        yield "int8" if precision == "int8" else "auto"
    finally:
        if before is None:
            os.environ.pop(PRECISION_ENV, None)
        else:
            os.environ[PRECISION_ENV] = before


def backends_part(
    device: str, names: tuple[str, ...], cache: Path, repeats: int, precisions: tuple[str, ...] = ("auto",)
) -> list[dict[str, Any]]:
    """Per-inference time of each backend at 640 and 320 px, and first (export) vs cached load."""
    from sensorium.models.detector import PersonDetector

    rows = []
    for name, precision in [(n, p) for n in names for p in (precisions if n == "openvino" else ("auto",))]:
        for size in (640, 320):
            t0 = time.perf_counter()
            fresh = Path(tempfile.mkdtemp(prefix="bench-export-", dir=cache))
            try:
                with playing(precision) as setting:
                    det = PersonDetector(device=device, imgsz=size, backend=name, cache_dir=fresh, precision=setting)
                    det.backend(size)
                    first = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    det = PersonDetector(device=device, imgsz=size, backend=name, cache_dir=fresh, precision=setting)
                    be = det.backend(size)
                    cached = time.perf_counter() - t0
            except Exception as exc:
                rows.append({"backend": name, "imgsz": size, "error": f"{type(exc).__name__}: {exc}"})
                continue
            x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
            for _ in range(3):
                be.infer(x)
            wall, cpu = [], []
            for _ in range(repeats):
                w0, c0 = time.perf_counter(), time.process_time()
                be.infer(x)
                wall.append(time.perf_counter() - w0)
                cpu.append(time.process_time() - c0)
            rows.append(
                {
                    "backend": be.describe(),
                    "requested": name,
                    "imgsz": size,
                    "wall_ms": _pct(wall),
                    "cpu_ms_p50": round(1000 * statistics.median(cpu), 1),
                    "first_load_s": round(first, 1),
                    "cached_load_s": round(cached, 1),
                    "notes": det.notes,
                }
            )
            log.info("  %s at %d px: %s ms", be.describe(), size, rows[-1]["wall_ms"])
    return rows


# ------------------------------------------------------------------------------------- real time


async def _stages(
    backend: str,
    mode: str,
    data_dir: Path,
    device: str,
    clock: Any,
    emit: Any,
    batch: int,
    threads: int,
    precision: str = "auto",
) -> Any:
    from sensorium.nodes.detect import DetectOptions, DetectStage
    from sensorium.nodes.face import FaceOptions, FaceStage
    from sensorium.pipeline.stage import StageContext

    def ctx(name: str, options: Any, budget: float) -> StageContext:
        return StageContext(
            name=name,
            worker="bench",
            options=options,
            device=device,
            clock=clock,
            data_dir=data_dir,
            emit=emit,
            budget_ms=budget,
        )

    opts = DetectOptions(
        backend=backend,
        motion=mode == "regions",
        batch=batch,
        emit_empty=True,
        cache_dir=str(data_dir / "cache"),
        threads=threads,
        precision=precision,
    )
    detect = DetectStage(ctx("detect", opts, DetectStage.default_budget_ms))
    face = FaceStage(ctx("face", FaceOptions(recognizer="facenet"), FaceStage.default_budget_ms))
    await detect.start()
    await face.start()
    return detect, face


async def realtime(
    backend: str,
    mode: str,
    cameras: tuple[int, ...],
    seconds: float,
    data_dir: Path,
    device: str,
    ref: Reference,
    threads: int = 0,
    precision: str = "auto",
) -> list[dict[str, Any]]:
    """N cameras at 5 fps through the runtime's runners, for each N, with one set of loaded stages."""
    from sensorium.pipeline.clock import Clock
    from sensorium.pipeline.messages import Message

    clock = Clock()
    router: dict[str, Any] = {}

    async def route(msg: Message) -> None:
        if "route" in router:  # the stages' start-up status comes before the cameras are wired
            await router["route"](msg)

    detect, face = await _stages(backend, mode, data_dir, device, clock, route, max(cameras), threads, precision)
    rows = []
    for n in cameras:
        rows.append(await _realtime_n(n, detect, face, router, clock, seconds, data_dir, ref))
        r = rows[-1]
        log.info(
            "  %s/%s %d cam: %.1f fps, %.0f%% dropped, presence p95 %s ms, cpu %.0f%%, recall %s",
            backend,
            mode,
            n,
            r["fps_answered"],
            100 * r["dropped_share"],
            r["frame_to_presence_ms"].get("p95"),
            100 * r["cpu_share_of_one_core"],
            r["recall_vs_full_frame"],
        )
    await detect.stop()
    detect.ctx.close()
    await face.stop()
    face.ctx.close()
    return rows


async def _realtime_n(
    n: int, detect: Any, face: Any, router: dict[str, Any], clock: Any, seconds: float, data_dir: Path, ref: Reference
) -> dict[str, Any]:
    from sensorium.models.yolo import match_boxes
    from sensorium.nodes.presence import PresenceOptions, PresenceStage
    from sensorium.pipeline.messages import Detections, Message, Presence
    from sensorium.pipeline.metrics import Metrics
    from sensorium.pipeline.runtime import StageRunner
    from sensorium.pipeline.stage import StageContext

    cams = Cameras(n)
    detect.regions.reset()
    detect.work.clear()
    detect.crops = 0
    detect._had_people.clear()
    detect._frame_no.clear()
    detect.level = 0
    detect.apply_degrade(0)
    face._tracks.clear()
    face._frames.clear()
    face.looks = 0
    presence = PresenceStage(
        StageContext(
            name="presence",
            worker="bench",
            options=PresenceOptions(),
            clock=clock,
            data_dir=data_dir,
            emit=router["route"] if "route" in router else None,
            budget_ms=PresenceStage.default_budget_ms,
        )
    )
    runners: list[StageRunner] = []
    presence_lat: list[float] = []
    entered_lat: list[float] = []
    count = {"matched": 0, "expected": 0, "answered": 0}

    async def route_n(msg: Message) -> None:
        if isinstance(msg, Presence) and msg.state == "entered" and msg.person != "unknown":
            entered_lat.append(clock.now() - msg.time)
        if isinstance(msg, Detections):
            count["answered"] += 1
            want = ref(cams.index(int(msg.room.removeprefix("room")), msg.frame_seq))
            got = [(b.x1, b.y1, b.x2, b.y2) for b in msg.boxes]
            count["matched"] += len(match_boxes(got, want, 0.5))
            count["expected"] += len(want)
        for r in runners:
            if r.wants(msg.topic()):
                r.offer(msg)

    router["route"] = route_n
    presence.ctx.emit = route_n
    await presence.start()
    orig = presence.handle

    async def timed(msg: Message) -> None:
        await orig(msg)
        if isinstance(msg, Detections):
            presence_lat.append(clock.now() - msg.time)

    presence.handle = timed  # type: ignore[method-assign]
    metrics = Metrics("bench")
    runners.extend(StageRunner(s, metrics, publish=route_n) for s in (detect, face, presence))
    # The reference for the frames this run will show, before the clock starts (it is slow on purpose).
    for c in range(n):
        for seq in range(1, int(seconds * FPS) + 2):
            ref(cams.index(c, seq))
    for r in runners:
        r.start()
    published = 0
    threads0 = _thread_cpu()
    c0, w0 = time.process_time(), time.monotonic()
    t_end = time.monotonic() + seconds
    next_tick = time.monotonic()
    while time.monotonic() < t_end:
        now = clock.now()
        for c in range(n):
            await route_n(cams.frame(c, now))
            published += 1
        next_tick += 1.0 / FPS
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    for r in runners:
        await r.drain(30)
    cpu, wall = time.process_time() - c0, time.monotonic() - w0
    by_thread = _cpu_by_thread(threads0, _thread_cpu(), wall)
    summary = {r.name: r.summary() for r in runners}
    await runners[2].stop()
    for r in runners[:2]:  # detect and face are reused: stop their loops, not the stages
        if r._task is not None:
            r._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await r._task
    det = summary["detect"]
    answered = count["answered"]
    return {
        "backend": detect.opts.backend,
        "mode": "regions" if detect.opts.motion else "full",
        "runs_on": detect.detector.backend_name,
        "cameras": n,
        "seconds": seconds,
        "frames_published": published,
        "frames_answered": answered,
        "fps_answered": round(answered / wall, 2),
        "dropped_share": round(1 - answered / published, 3) if published else 0.0,
        "runtime_dropped": det["dropped"],
        "frame_to_presence_ms": _pct(presence_lat),
        "frame_to_entered_ms": _pct(entered_lat),
        "entered_events": len(entered_lat),
        "cpu_share_of_one_core": round(cpu / wall, 3),
        # Where that CPU went: the stages' threads (detect: decode, motion, inference, tracking; face),
        # the event loop (routing, presence) and library thread pools (OpenVINO streams, BLAS).
        "cpu_by_thread": by_thread,
        "load_1m": round(os.getloadavg()[0], 2),
        "recall_vs_full_frame": round(count["matched"] / count["expected"], 3) if count["expected"] else None,
        "reference_persons": count["expected"],
        "work": dict(detect.work),
        "detector_inputs": detect.crops,
        "face_looks": face.looks,
        "detect_ladder": det["ladder"],
        "detect_level_end": det["level"],
        "stages": summary,
    }


# ------------------------------------------------------------------------------------ face gating


async def face_gating(data_dir: Path, device: str, backend: str, seconds: float) -> list[dict[str, Any]]:
    """The clip through detect (regions) → face, every frame, with and without the face gate."""
    jpegs = vision_media.clip_jpegs()[: int(seconds * FPS)]
    rows = []
    for gate in (False, True):
        rows.append(await _face_run(gate, jpegs, data_dir, device, backend))
        log.info("  face gate %s: %s", gate, rows[-1])
    return rows


async def _face_run(gate: bool, jpegs: tuple[bytes, ...], data_dir: Path, device: str, backend: str) -> dict[str, Any]:
    from sensorium.nodes.detect import DetectOptions, DetectStage
    from sensorium.nodes.face import FaceOptions, FaceStage
    from sensorium.pipeline.clock import Clock
    from sensorium.pipeline.messages import Detections, FaceRecognized, Message, VideoFrame
    from sensorium.pipeline.stage import StageContext

    clock = Clock()
    dets: list[Detections] = []
    faces: list[FaceRecognized] = []

    async def emit(msg: Message) -> None:
        if isinstance(msg, Detections):
            dets.append(msg)
        elif isinstance(msg, FaceRecognized):
            faces.append(msg)

    def ctx(name: str, options: Any) -> StageContext:
        return StageContext(
            name=name, worker="bench", options=options, device=device, clock=clock, data_dir=data_dir, emit=emit
        )

    detect = DetectStage(ctx("detect", DetectOptions(backend=backend, cache_dir=str(data_dir / "cache"))))
    face = FaceStage(ctx("face", FaceOptions(recognizer="facenet", gate=gate)))
    await detect.start()
    await face.start()
    spent = 0.0
    t0 = 1000.0
    for i, data in enumerate(jpegs):
        t = t0 + i / FPS
        f = VideoFrame(seq=i + 1, time=t, room="hall", source="cam", width=WIDTH, height=HEIGHT, data=data)
        await face.handle(f)
        dets.clear()
        await detect.handle(f)
        w0 = time.perf_counter()
        face.now = lambda t=t: t  # re-checks on the clip's time: the same looks however fast this runs
        for d in dets:
            await face.handle(d)
        spent += time.perf_counter() - w0
    named = [m for m in faces if m.person != "unknown"]
    out = {
        "gate": gate,
        "frames": len(jpegs),
        "face_looks": face.looks,
        "embeddings": face.recognitions,
        # Times the gate declined a look; a declined track may still be looked at a frame later (and then
        # find a face it would have found anyway), so the looks saved are the difference in face_looks.
        "gate_declined": face.skipped,
        "face_seconds": round(spent, 2),
        "recognized": sorted({f"{m.person}@track{m.track}" for m in named}),
        "first_recognized_s": round(min(m.time for m in named) - t0, 1) if named else None,
    }
    for s in (detect, face):
        await s.stop()
        s.ctx.close()
    return out


# ------------------------------------------------------------------------------------------- run


def run(
    quick: bool = False,
    device: str = "cpu",
    cameras: tuple[int, ...] | None = None,
    backends: tuple[str, ...] | None = None,
    precisions: tuple[str, ...] = ("auto", "f32", "int8"),
) -> dict[str, Any]:
    """All three parts; returns JSON-ready results. ``precisions``: OpenVINO's runs ("auto": bf16 where the CPU
    has it; "f32" / "int8": as on a CPU without bf16, by default / with ``precision = "int8"``)."""
    cameras = cameras or ((1, 4) if quick else (1, 4, 8))
    backends = backends or _backends_for(device)
    seconds = 6.0 if quick else 20.0
    data_dir = Path(tempfile.mkdtemp(prefix="sensorium-bench-vision-"))
    (data_dir / "cache").mkdir()
    _gallery(data_dir / "gallery.db")
    load0 = os.getloadavg()[0]
    results: dict[str, Any] = {
        "device": device,
        "fps_per_camera": FPS,
        "quick": quick,
        "clip": {"seconds": vision_media.SECONDS, "frames": len(vision_media.clip_jpegs()), "size": [WIDTH, HEIGHT]},
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_at_start": round(load0, 2),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        },
    }
    log.info("backends: %s", ", ".join(backends))
    results["backends"] = backends_part(device, backends, data_dir / "cache", 10 if quick else 30, precisions)
    checkpoint(results)
    ref = Reference()
    results["realtime"] = []
    for backend in backends:
        for precision in precisions if backend == "openvino" else ("auto",):
            for mode in MODES:
                log.info("real time: %s (%s), %s", backend, precision, mode)
                try:
                    with playing(precision) as setting:
                        results["realtime"] += asyncio.run(
                            realtime(backend, mode, cameras, seconds, data_dir, device, ref, precision=setting)
                        )
                except Exception as exc:  # one backend failing must not lose the others' numbers
                    log.exception("real time %s/%s failed", backend, mode)
                    results["realtime"].append(
                        {"backend": backend, "mode": mode, "error": f"{type(exc).__name__}: {exc}"}
                    )
                checkpoint(results)
    face_backend = "openvino" if "openvino" in backends else backends[-1]
    log.info("face gating (%s, regions)", face_backend)
    results["face_gating"] = asyncio.run(
        face_gating(data_dir, device, face_backend, 12.0 if quick else vision_media.SECONDS)
    )
    results["load_at_end"] = round(os.getloadavg()[0], 2)
    return results


def render(results: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    m = results["machine"]
    lines = [
        f"Vision on {results['device']}, {results['fps_per_camera']:g} fps per camera, generated walking-people clip "
        f"({m['cores']} cores, load {m.get('load_at_start', '?')} at start, {results.get('load_at_end', '?')} at end"
        f"{'; OpenVINO limited to ' + m['onednn_max_cpu_isa'] + ' kernels' if m.get('onednn_max_cpu_isa') else ''})"
        f"{' — quick run' if results.get('quick') else ''}",
        "",
        "| backend | input | one inference p50 / p95 | CPU per inference | first load (export) | cached load |",
        "|---|---|---|---|---|---|",
    ]
    for b in results["backends"]:
        if "error" in b:
            lines.append(f"| {b['backend']} | {b['imgsz']} | failed: {b['error']} | | | |")
            continue
        w = b["wall_ms"]
        lines.append(
            f"| {b['backend']} | {b['imgsz']} | {w['p50']:.0f} / {w['p95']:.0f} ms | {b['cpu_ms_p50']:.0f} ms | "
            f"{b['first_load_s']:.1f} s | {b['cached_load_s']:.1f} s |"
        )
    lines += _realtime_table(results["realtime"])
    for rerun in results.get("reruns", []):
        lines += ["", f"Re-run: {rerun['why']}"]
        lines += _realtime_table(rerun["realtime"])
    lines += [line for note in results.get("notes", []) for line in ("", note)]
    lines += [
        "",
        "| face gate | frames | looks | embeddings | face stage time | recognized (person@track) | first at |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in results.get("face_gating", []):
        lines.append(
            f"| {'on' if g['gate'] else 'off'} | {g['frames']} | {g['face_looks']} | {g['embeddings']} | "
            f"{g['face_seconds']:.2f} s | {', '.join(g['recognized']) or '-'} | {g['first_recognized_s']} s |"
        )
    return "\n".join(lines)


def _realtime_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "| backend | mode | cameras | frames/s answered | dropped | frame→presence p50 / p95 | CPU (% of one core) "
        "| recall vs full frame | detector ran (none/regions/full) | degrade | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    nan = float("nan")
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['backend']} | {r['mode']} | | failed: {r['error']} | | | | | | | |")
            continue
        p = r["frame_to_presence_ms"]
        w = r["work"]
        lines.append(
            f"| {r['runs_on']} | {r['mode']} | {r['cameras']} | {r['fps_answered']:.1f} of {r['cameras'] * FPS:g} | "
            f"{100 * r['dropped_share']:.1f} % | {p.get('p50', nan):.0f} / {p.get('p95', nan):.0f} ms | "
            f"{100 * r['cpu_share_of_one_core']:.0f} % | {r['recall_vs_full_frame']} | "
            f"{w.get('none', 0)}/{w.get('regions', 0)}/{w.get('full', 0)} | {_ladder(r)} | {r.get('load_1m', '?')} |"
        )
    one = [r for r in rows if r.get("cameras") == 1 and r.get("cpu_by_thread")]
    if one:
        lines += ["", "One camera's CPU by thread (% of one core):", ""]
        for r in one:
            split = ", ".join(f"{k} {100 * v:.0f} %" for k, v in r["cpu_by_thread"].items())
            lines.append(f"- {r['runs_on']}, {r['mode']}: {split}")
    return lines


def _ladder(r: dict[str, Any]) -> str:
    moves = r["detect_ladder"]
    if not moves:
        return "-"
    steps = sorted({m.split(":", 1)[1] for m in moves})
    return f"{len(moves)} moves over {', '.join(steps)}; ends at level {r['detect_level_end']}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized run (1 and 4 cameras, 6 s real time each)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda:N")
    ap.add_argument("--cameras", default="", help="comma-separated camera counts (default 1,4,8)")
    ap.add_argument("--backends", default="", help="comma-separated backends (default: torch, onnxruntime, openvino)")
    ap.add_argument(
        "--precisions",
        default="auto,f32,int8",
        help="OpenVINO's runs: auto (this CPU's choice: bf16 where it has it); f32, int8: as on a CPU without bf16, "
        'by default / with precision = "int8" (INT8 where it passes its check)',
    )
    add_out(ap, RESULTS)
    args = ap.parse_args(argv)
    vision_media.progress_logging()
    cams = tuple(int(x) for x in args.cameras.split(",") if x) or None
    bes = tuple(x for x in args.backends.split(",") if x) or None
    precisions = tuple(x for x in args.precisions.split(",") if x) or ("auto",)
    return run_and_report(args.out, lambda: run(args.quick, args.device, cams, bes, precisions), render)


if __name__ == "__main__":
    raise SystemExit(main())
