"""Vision benchmark: person detection, faces and presence at 640 px, 1/4/8 cameras at 5 fps each.

Two parts, one run:

1. **Throughput** (stages driven directly, as fast as they go): frames/s of ``detect`` alone and of
   ``detect`` + ``face`` for N cameras, **batched** (one YOLO pass per tick over the N cameras'
   frames: ``max_batch = N``) vs **unbatched** (one pass per frame), side by side. Each camera shows
   a different real scene from the packages (bus, zidane, t1, astronaut; people drifting a few pixels
   a frame so the trackers work) with the astronaut enrolled in the gallery. "sustains" says whether
   the rate covers N × 5 fps.
2. **Real time through the runtime** (``pipeline.runtime.StageRunner``, the runtime's own queues,
   latest-frame-wins, late drops and degrade ladder): N cameras publish a frame every 200 ms for a
   fixed time into detect → face → presence. Reported: dropped-frame share of the detect stage
   (frames superseded or past budget / frames published), the degrade steps it took, frame →
   presence latency p50/p95 (capture time → the presence stage has applied that frame's
   detections) and capture → ``entered`` event latency for the enrolled person (one per camera/room).

Run: ``.venv/bin/python -m benchmarks.vision [--quick] [--device cuda:0]``; prints a table and writes
``benchmarks/results/vision.json``. ``run(quick=False) -> dict`` is the module API. Numbers taken on
a busy machine are not final: say where they came from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "vision.json"
FPS = 5.0
WIDTH, HEIGHT = 640, 480
log = logging.getLogger("bench.vision")


# ------------------------------------------------------------------------------------- media


def _scenes() -> list[np.ndarray]:
    """Real photos with people, from the installed packages, as 640×480 BGR frames."""
    import cv2

    from pipeline.media import package_image

    paths = []
    try:  # the enrolled person first, so every run has someone to recognize
        import skimage

        paths.append(Path(skimage.__file__).parent / "data" / "astronaut.png")
    except ImportError:
        pass
    paths += [package_image(n) for n in ("bus", "zidane", "t1")]
    out = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        s = min(WIDTH / img.shape[1], HEIGHT / img.shape[0])
        small = cv2.resize(img, (int(img.shape[1] * s), int(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
        frame = np.full((HEIGHT, WIDTH, 3), 110, np.uint8)
        y, x = (HEIGHT - small.shape[0]) // 2, (WIDTH - small.shape[1]) // 2
        frame[y : y + small.shape[0], x : x + small.shape[1]] = small
        out.append(frame)
    return out


class Cameras:
    """N cameras, each cycling through pre-encoded JPEG frames of its scene with a small drift."""

    def __init__(self, n: int, frames_per_camera: int = 10) -> None:
        import cv2

        scenes = _scenes()
        self.n = n
        self.jpegs: list[list[bytes]] = []
        for c in range(n):
            scene = scenes[c % len(scenes)]
            seq = []
            for i in range(frames_per_camera):
                dx = 2 * (i % 5) + c % 3  # people shift a little, as they do when standing
                m = np.float32([[1, 0, dx], [0, 1, 0]])
                f = cv2.warpAffine(scene, m, (WIDTH, HEIGHT), borderMode=cv2.BORDER_REPLICATE)
                seq.append(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
            self.jpegs.append(seq)
        self.seq = [0] * n

    @staticmethod
    def room(c: int) -> str:
        return f"room{c}"

    def frame(self, c: int, now: float) -> Any:
        from pipeline.messages import VideoFrame

        self.seq[c] += 1
        data = self.jpegs[c][self.seq[c] % len(self.jpegs[c])]
        return VideoFrame(
            seq=self.seq[c], time=now, room=self.room(c), source="cam", width=WIDTH, height=HEIGHT, data=data
        )


def _gallery(path: Path) -> None:
    """Enrol the astronaut (camera 0, and every 4th after it, shows her) so presence has someone to name."""
    from models.faces import FacePipeline
    from models.gallery import Gallery

    try:
        import skimage

        img = Path(skimage.__file__).parent / "data" / "astronaut.png"
    except ImportError:
        return
    pipe = FacePipeline(recognizer="facenet")
    emb, model_id = pipe.embed_image_file(img)
    pipe.close()
    with Gallery(path) as g:
        g.add("eileen", "face", model_id, emb)


# ------------------------------------------------------------------------------- stage helpers


def _ctx(name: str, options: Any, data_dir: Path, device: str, clock: Any, emit: Any, budget_ms: float) -> Any:
    from pipeline.stage import StageContext

    return StageContext(
        name=name,
        worker="bench",
        options=options,
        device=device,
        clock=clock,
        data_dir=data_dir,
        emit=emit,
        budget_ms=budget_ms,
    )


async def _stages(data_dir: Path, device: str, clock: Any, emit: Any, batch: int) -> tuple[Any, Any, Any]:
    from nodes.detect import DetectOptions, DetectStage
    from nodes.face import FaceOptions, FaceStage
    from nodes.presence import PresenceOptions, PresenceStage

    detect = DetectStage(
        _ctx("detect", DetectOptions(batch=batch), data_dir, device, clock, emit, DetectStage.default_budget_ms)
    )
    face = FaceStage(
        _ctx("face", FaceOptions(recognizer="facenet"), data_dir, device, clock, emit, FaceStage.default_budget_ms)
    )
    presence = PresenceStage(
        _ctx("presence", PresenceOptions(), data_dir, device, clock, emit, PresenceStage.default_budget_ms)
    )
    for s in (detect, face, presence):
        await s.start()
    return detect, face, presence


# ---------------------------------------------------------------------------------- throughput


async def throughput(cameras: tuple[int, ...], frames_per_camera: int, data_dir: Path, device: str) -> list[Any]:
    """Frames/s of detect and detect+face for each camera count, batched and unbatched."""
    from pipeline.clock import Clock
    from pipeline.messages import Detections

    clock = Clock()
    pending: list[Any] = []

    async def emit(msg: Any) -> None:
        if isinstance(msg, Detections):
            pending.append(msg)

    detect, face, presence = await _stages(data_dir, device, clock, emit, batch=max(cameras))
    rows = []
    for n in cameras:
        cams = Cameras(n, frames_per_camera)
        out: dict[str, Any] = {"cameras": n, "frames": n * frames_per_camera, "needed_fps": n * FPS}
        for with_face in (False, True):
            for batched in (False, True):
                # Fresh tracks and faces for every configuration, so each pays for first sightings.
                detect.detector.reset()
                face._tracks.clear()
                face.looks = face.recognitions = 0
                detect.max_batch = n if batched else 1
                await detect.handle_batch([cams.frame(c, clock.now()) for c in range(n)])  # warm-up tick
                pending.clear()
                t0 = time.perf_counter()
                for _ in range(frames_per_camera):
                    frames = [cams.frame(c, clock.now()) for c in range(n)]
                    if with_face:
                        for f in frames:
                            await face.handle(f)
                    if batched:
                        await detect.handle_batch(frames)
                    else:
                        for f in frames:
                            await detect.handle(f)
                    if with_face:
                        for d in pending:
                            await face.handle(d)
                    pending.clear()
                dt = time.perf_counter() - t0
                fps = n * frames_per_camera / dt
                key = ("detect+face" if with_face else "detect") + ("/batched" if batched else "/unbatched")
                out[key] = {
                    "fps": round(fps, 2),
                    "sustains": fps >= n * FPS,
                    "ms_per_frame": round(1000 * dt / (n * frames_per_camera), 1),
                }
                if with_face:
                    out[key] |= {"face_lookups": face.looks, "face_recognitions": face.recognitions}
                log.info("  %d camera(s) %s: %.2f fps", n, key, fps)
        rows.append(out)
    for s in (detect, face, presence):
        await s.stop()
        s.ctx.close()
    return rows


# ----------------------------------------------------------------------------------- real time


async def realtime(n: int, seconds: float, data_dir: Path, device: str) -> dict[str, Any]:
    """N cameras at 5 fps each through the runtime's runners for ``seconds``."""
    from nodes.presence import PresenceStage
    from pipeline.clock import Clock
    from pipeline.messages import Detections, Message, Presence
    from pipeline.metrics import Metrics, percentiles
    from pipeline.runtime import StageRunner

    cams = Cameras(n, 10)
    clock = Clock()
    runners: list[StageRunner] = []
    presence_lat: list[float] = []
    entered_lat: list[float] = []
    events: list[Message] = []

    async def route(msg: Message) -> None:
        if isinstance(msg, Presence) and msg.state == "entered" and msg.person != "unknown":
            entered_lat.append(clock.now() - msg.time)
        events.append(msg)
        for r in runners:
            if r.wants(msg.topic()):
                r.offer(msg)

    detect, face, presence = await _stages(data_dir, device, clock, route, batch=n)
    orig = presence.handle

    async def timed(msg: Message, orig: Any = orig) -> None:
        await orig(msg)
        if isinstance(msg, Detections):
            presence_lat.append(clock.now() - msg.time)

    presence.handle = timed  # type: ignore[method-assign]
    assert isinstance(presence, PresenceStage)
    metrics = Metrics("bench")
    runners.extend(StageRunner(s, metrics, publish=route) for s in (detect, face, presence))
    for r in runners:
        r.start()

    published = 0
    t_end = time.monotonic() + seconds
    next_tick = time.monotonic()
    while time.monotonic() < t_end:
        now = clock.now()
        for c in range(n):
            await route(cams.frame(c, now))
            published += 1
        next_tick += 1.0 / FPS
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    for r in runners:
        await r.drain(30)
    summary = {r.name: r.summary() for r in runners}
    for r in runners:
        await r.stop()
    det = summary["detect"]
    p = percentiles(presence_lat, (50, 95))
    e = percentiles(entered_lat, (50, 95))
    return {
        "cameras": n,
        "seconds": seconds,
        "frames_published": published,
        "detect_handled": det["inputs"],
        "detect_dropped": det["dropped"],
        "dropped_share": round(det["dropped"] / published, 3) if published else 0.0,
        "detect_ladder": det["ladder"],
        "frame_to_presence_ms": {k: round(v * 1000, 1) for k, v in p.items() if k != "n"},
        "frame_to_entered_ms": {k: round(v * 1000, 1) for k, v in e.items() if k != "n"},
        "entered_events": len(entered_lat),
        "stages": summary,
    }


# ---------------------------------------------------------------------------------------- run


def run(quick: bool = False, device: str = "cpu", cameras: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Run both parts; returns JSON-ready results."""
    cameras = cameras or ((1, 4) if quick else (1, 4, 8))
    frames_per_camera = 4 if quick else 10
    seconds = 6.0 if quick else 20.0
    data_dir = Path(tempfile.mkdtemp(prefix="sensorium-bench-vision-"))
    _gallery(data_dir / "gallery.db")
    results: dict[str, Any] = {
        "device": device,
        "imgsz": 640,
        "fps_per_camera": FPS,
        "quick": quick,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "throughput": [],
        "realtime": [],
    }
    log.info("throughput: %s camera(s), %d frames each", cameras, frames_per_camera)
    results["throughput"] = asyncio.run(throughput(cameras, frames_per_camera, data_dir, device))
    for n in cameras:
        log.info("real time, %d camera(s), %.0f s", n, seconds)
        results["realtime"].append(asyncio.run(realtime(n, seconds, data_dir, device)))
    return results


def render(results: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    lines = [
        f"Vision on {results['device']} at {results['imgsz']} px, {results['fps_per_camera']:g} fps per camera "
        f"({results['machine']['cores']} cores){' — quick run' if results.get('quick') else ''}",
        "",
        "| cameras | needed fps | detect unbatched | detect batched | detect+face unbatched | detect+face batched |",
        "|---|---|---|---|---|---|",
    ]
    for t in results["throughput"]:
        cells = []
        for key in ("detect/unbatched", "detect/batched", "detect+face/unbatched", "detect+face/batched"):
            r = t[key]
            cells.append(f"{r['fps']:.2f} fps{' ✓' if r['sustains'] else ''}")
        lines.append(f"| {t['cameras']} | {t['needed_fps']:g} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| cameras (real time) | frames | dropped | frame→presence p50 / p95 | frame→entered p50 / p95 | degrade |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["realtime"]:
        p, e = r["frame_to_presence_ms"], r["frame_to_entered_ms"]
        lines.append(
            f"| {r['cameras']} | {r['frames_published']} | {100 * r['dropped_share']:.0f}% | "
            f"{p.get('p50', float('nan')):.0f} / {p.get('p95', float('nan')):.0f} ms | "
            f"{e.get('p50', float('nan')):.0f} / {e.get('p95', float('nan')):.0f} ms | "
            f"{_ladder(r)} |"
        )
    return "\n".join(lines)


def _ladder(r: dict[str, Any]) -> str:
    """The detect stage's degrade moves, compactly: "3 moves, ends at level 1 (half-resolution)"."""
    moves = r["detect_ladder"]
    if not moves:
        return "-"
    level = r["stages"]["detect"]["level"]
    steps = sorted({m.split(":", 1)[1] for m in moves})
    return f"{len(moves)} moves over {', '.join(steps)}; ends at level {level}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized run (1 and 4 cameras, few frames, 6 s real time)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda:N")
    ap.add_argument("--cameras", default="", help="comma-separated camera counts (default 1,4,8)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON results")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cams = tuple(int(x) for x in args.cameras.split(",") if x) or None
    results = run(args.quick, args.device, cams)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(render(results))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
