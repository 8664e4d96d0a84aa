"""Person detection and tracking: camera frames in, ``Detections`` (boxes with per-camera track ids) out.

The detector runs on a backend chosen by ``backend`` (``auto``: OpenVINO or ONNX Runtime on a CPU,
TensorRT or ONNX Runtime's CUDA provider on a GPU where installed, PyTorch otherwise), exported once
and cached under ``<data_dir>/cache/detector``; a backend that cannot be loaded falls back to the
next one and the worker says why in a ``node_status`` event. With ``motion`` (the default) it looks
only where something moved, around tracks due a check, and at the whole frame every ``keepalive``
(``models.regions``); still frames cost a small grayscale decode and keep their tracks.

Bad frames (corrupt, truncated, empty, huge, wrong room) are rejected with an ``error`` event and the
other cameras' frames in the same batch are still served.
"""

from __future__ import annotations

import struct
from collections import Counter
from typing import Any, ClassVar

import msgspec

from sensorium.models.backends import BACKENDS, PRECISIONS
from sensorium.models.detector import CONF, CONTAIN, DEFAULT_CLASS_MAP
from sensorium.pipeline.config import ConfigError
from sensorium.pipeline.messages import Box, Detections, Message, NodeStatus, VideoFrame
from sensorium.pipeline.stage import Duration, Library, Stage, StageContext, StageOptions


class DetectOptions(StageOptions):
    """``[stages.detect]``."""

    weights: str = "bundled"
    """YOLO weights: "bundled" (offline YOLOv8s person model), a name like "yolo11n.pt", or a path."""
    class_map: dict[str, str] = msgspec.field(default_factory=lambda: dict(DEFAULT_CLASS_MAP))
    """Model class name → "person" for the classes that are people."""
    conf: float = CONF
    """Minimum detector confidence (calibrated on labelled photos: ``benchmarks/counting.py``)."""
    contain: float = CONTAIN
    """A box with this share of its area inside a better box (or holding it) is the same person and goes (0 = off)."""
    confirm_frames: int = 2
    """Frames with a tracker id a track must be found in before it counts as a person (``persons``, presence,
    Home Assistant); the tracker gives ids from a box's second frame, so a person counts from the third."""
    imgsz: int = 640
    """Input size for whole frames in pixels (a multiple of 32: 320, 416, 640)."""
    backend: str = "auto"
    """"auto", "openvino", "onnxruntime", "tensorrt" or "torch" (exported from the same weights)."""
    precision: str = "auto"
    """"auto" (the backend's choice for the hardware), "f32", or "int8" (used only if it passes its check)."""
    motion: bool = True
    """Detect only where something moved (plus track checks and keep-alive passes); False: every whole frame."""
    region_size: int = 320
    """Detector input size for motion regions (a multiple of 32, at most ``imgsz``)."""
    keepalive: Duration = "5s"
    """With ``motion``: longest time between whole-frame passes of a camera."""
    recheck: Duration = "1s"
    """With ``motion``: longest time between looks at a person who stands still."""
    motion_threshold: int = 25
    """Grey-level change that counts as motion (1–255)."""
    threads: int = 0
    """Threads per inference (0: one per image and one stream per core on OpenVINO, the library's default else)."""
    cache_dir: str = ""
    """Where exported models are kept ("" = <data_dir>/cache/detector)."""
    tracker: str = "bytetrack"
    """ultralytics tracker config: "bytetrack" or "botsort"."""
    batch: int = 8
    """Most camera frames handled in one call (one batched pass per input size on PyTorch)."""
    max_pixels: int = 4096 * 4096
    """Frames larger than this (width × height) are rejected before decoding."""
    max_bytes: int = 16 * 1024 * 1024
    """Encoded frames larger than this are rejected."""
    emit_empty: bool = False
    """Publish frames without people too (otherwise only the first empty frame after people)."""

    def __post_init__(self) -> None:
        super().__post_init__()  # durations
        # Bad values fail when the config loads, naming the key, not when the stage starts.
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend: expected one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for key in ("imgsz", "region_size"):
            v = getattr(self, key)
            if v < 64 or v % 32:
                raise ConfigError(f"{key}: expected a multiple of 32 of at least 64 (320, 416, 640), got {v}")
        if self.region_size > self.imgsz:
            raise ConfigError(f"region_size: {self.region_size} is larger than imgsz {self.imgsz}")
        if not 0.0 <= self.contain <= 1.0:
            raise ConfigError(f"contain: expected 0–1, got {self.contain}")
        if self.confirm_frames < 1:
            raise ConfigError(f"confirm_frames: expected at least 1, got {self.confirm_frames}")
        if not 1 <= self.motion_threshold <= 255:
            raise ConfigError(f"motion_threshold: expected 1–255, got {self.motion_threshold}")


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's SOF header, without decoding; None if there is no valid header."""
    if len(data) < 4 or data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > len(data):
                return None
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + length
    return None


def check_frame(msg: VideoFrame, max_pixels: int, max_bytes: int) -> str | None:
    """Why a frame cannot be used, or None if it looks like a complete JPEG of a sane size."""
    data = msg.data
    if not data:
        return "empty frame (0 bytes)"
    if len(data) > max_bytes:
        return f"frame of {len(data)} bytes is over the {max_bytes}-byte limit"
    if msg.encoding != "jpeg":
        return f"unsupported encoding {msg.encoding!r}"
    size = jpeg_size(data)
    if size is None:
        return "not a JPEG (no valid JPEG header)"
    w, h = size
    if w == 0 or h == 0:
        return f"zero-size frame ({w}×{h})"
    if w * h > max_pixels:
        return f"frame of {w}×{h} pixels is over the {max_pixels}-pixel limit"
    if b"\xff\xd9" not in data[-64:]:
        return f"truncated JPEG ({len(data)} bytes, no end-of-image marker)"
    return None


class DetectStage(Stage):
    """Person detection (whole frames or motion regions) with per-camera tracking."""

    Options: ClassVar[type[msgspec.Struct]] = DetectOptions
    name: ClassVar[str] = "detect"
    serves: ClassVar[str] = "camera"
    consumes: ClassVar[tuple[type[Message], ...]] = (VideoFrame,)
    emits: ClassVar[tuple[type[Message], ...]] = (Detections,)
    answers: ClassVar[tuple[type[Message], ...]] = (Detections,)
    libraries: ClassVar[tuple[Library, ...]] = (
        Library("ultralytics", "ultralytics-opencv-headless (sensorium[workers])"),
    )
    droppable: ClassVar[bool] = True
    nice: ClassVar[int] = 10  # voice first when the cores are short: vision falls behind and degrades first
    # The cheap steps come before dropping frames; with motion off, the second one turns motion on.
    degrade_steps: ClassVar[tuple[str, ...]] = ("smaller-input", "fewer-checks", "skip-alternate-frames")
    default_budget_ms: ClassVar[float] = 1000.0
    max_batch: ClassVar[int] = 8

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        self.opts: DetectOptions = ctx.options
        self.max_batch = max(1, self.opts.batch)  # type: ignore[misc]  # per-deployment batch size
        if not self.opts.motion:
            self.degrade_steps = ("smaller-input", "motion-regions", "skip-alternate-frames")  # type: ignore[misc]
        o = self.opts
        # "smaller-input": whole frames at the region size (or half size where they are the same).
        self.small_size = o.region_size if o.region_size < o.imgsz else max(64, o.imgsz // 64 * 32)
        self.detector: Any = None
        self.regions: Any = None
        self._had_people: dict[str, bool] = {}
        self._frame_no: dict[str, int] = {}
        self._last_seq: dict[str, int] = {}
        self.work: Counter[str] = Counter()
        """Frames by what the detector did: "full", "regions", "none" (for tests and benchmarks)."""
        self.crops = 0
        """Detector inputs run (whole frames, regions and retries)."""

    async def start(self) -> None:
        from sensorium.models.detector import PersonDetector
        from sensorium.models.regions import RegionDetector, Settings

        o = self.opts
        cache = o.cache_dir or str(self.ctx.data_dir / "cache" / "detector")
        self.detector = await self.ctx.run_blocking(
            lambda: PersonDetector(
                o.weights,
                self.ctx.device,
                o.conf,
                o.imgsz,
                o.class_map,
                o.tracker,
                o.backend,
                cache,
                o.precision,
                o.threads,
                o.contain,
            )
        )
        settings = Settings(threshold=o.motion_threshold, confirm_frames=o.confirm_frames)
        self.regions = RegionDetector(self.detector, settings)
        self.apply_degrade(self.level)
        # Export, load and run every input size now: the first frame must meet its budget too.
        sizes = tuple(sorted({o.imgsz, o.region_size, self.small_size}, reverse=True))
        await self.ctx.run_blocking(self.detector.warm_up, sizes)
        backend = self.detector.backend_name
        self.ctx.log.info("detect runs on %s (%s)", backend, ", ".join(f"{s} px" for s in sizes))
        for note in self.detector.notes:
            await self.ctx.publish(
                NodeStatus(
                    time=self.ctx.clock.now(),
                    node=self.ctx.worker,
                    role="worker",
                    state="degraded",
                    detail=f"detect: {note} — running {backend}",
                )
            )

    def apply_degrade(self, level: int) -> None:
        super().apply_degrade(level)
        if self.regions is None:
            return
        o, s = self.opts, self.regions.settings
        steps = self.degrade_steps[:level]
        s.full_size = self.small_size if "smaller-input" in steps else o.imgsz
        s.region_size = o.region_size
        s.motion = o.motion or "motion-regions" in steps
        slow = 4.0 if "fewer-checks" in steps else 1.0
        s.keepalive_s = o.seconds("keepalive") * slow
        s.recheck_s = o.seconds("recheck") * slow

    async def handle(self, msg: Message) -> None:
        await self.handle_batch([msg])

    async def handle_batch(self, msgs: list[Message]) -> None:
        frames: list[VideoFrame] = []
        skip = "skip-alternate-frames" in self.degrade_steps[: self.level]
        for msg in msgs:
            reason = self._check(msg)
            if reason:
                await self.ctx.reject(msg, reason)
                continue
            assert isinstance(msg, VideoFrame)
            cam = self._camera(msg)
            last = self._last_seq.get(cam, 0)
            if last and 0 < msg.seq <= last:
                # The camera's stream started again (an edge restart, a session replayed): its tracks, motion
                # background and counts belong to the old stream, and a count must not depend on them.
                await self.ctx.run_blocking(self.regions.reset, cam)
                self._had_people.pop(cam, None)
                self._frame_no.pop(cam, None)
            self._last_seq[cam] = msg.seq
            n = self._frame_no[cam] = self._frame_no.get(cam, 0) + 1
            if skip and n % 2 == 0:
                continue
            frames.append(msg)
        if not frames:
            return
        results = await self.ctx.run_blocking(self._infer, frames)
        for msg, res in zip(frames, results, strict=True):
            if res.error:
                await self.ctx.reject(msg, res.error)
                continue
            self.work[res.work] += 1
            self.crops += res.crops
            cam = self._camera(msg)
            boxes = res.boxes
            had = self._had_people.get(cam, False)
            self._had_people[cam] = bool(boxes)
            if not boxes and not had and not self.opts.emit_empty:
                continue
            await self.ctx.publish(
                Detections(
                    time=msg.time,
                    room=msg.room,
                    # Per-camera topic (detections/room/camera): a droppable consumer keeps the latest
                    # detections of EACH camera, not one per room.
                    source=msg.source,
                    camera=msg.source,
                    # People counted: confirmed tracks (boxes not confirmed yet come with track -1).
                    persons=res.people,
                    boxes=[Box(b.x1, b.y1, b.x2, b.y2, round(b.score, 4), b.track) for b in boxes],
                    frame_seq=msg.seq,
                )
            )

    def _check(self, msg: Message) -> str | None:
        if not isinstance(msg, VideoFrame):
            return f"expected a video frame, got {type(msg).__name__}"
        if problem := self.ctx.room_problem(msg.room):
            return problem
        return check_frame(msg, self.opts.max_pixels, self.opts.max_bytes)

    @staticmethod
    def _camera(msg: Message) -> str:
        return f"{msg.room}/{msg.source}"

    def _infer(self, frames: list[VideoFrame]) -> list[Any]:
        """Motion, regions, detection and tracking for a batch of checked frames (on the stage's thread)."""
        from sensorium.models.regions import FrameIn

        batch = []
        for f in frames:
            w, h = jpeg_size(f.data) or (f.width, f.height)
            batch.append(FrameIn(self._camera(f), f.data, f.time, w, h))
        return self.regions.process(batch)
