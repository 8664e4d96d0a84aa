"""Person detection and tracking: camera frames in, ``Detections`` (boxes with per-camera track ids) out.

One batched YOLO pass serves the latest frame of up to ``batch`` cameras; each camera keeps its own
ultralytics tracker. Bad frames (corrupt, truncated, empty, huge, wrong room) are rejected with an
``error`` event and the other cameras' frames in the same batch are still served.
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar

import msgspec

from models.detector import DEFAULT_CLASS_MAP
from pipeline.messages import Box, Detections, Message, VideoFrame
from pipeline.stage import Stage, StageContext


class DetectOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[stages.detect]``."""

    weights: str = "bundled"
    """YOLO weights: "bundled" (offline YOLOv8s person model), a name like "yolo11n.pt", or a path."""
    class_map: dict[str, str] = msgspec.field(default_factory=lambda: dict(DEFAULT_CLASS_MAP))
    """Model class name → "person" for the classes that are people."""
    conf: float = 0.25
    """Minimum detector confidence."""
    imgsz: int = 640
    """Inference size in pixels."""
    tracker: str = "bytetrack"
    """ultralytics tracker config: "bytetrack" or "botsort"."""
    batch: int = 8
    """Most camera frames run in one batched forward pass."""
    max_pixels: int = 4096 * 4096
    """Frames larger than this (width × height) are rejected before decoding."""
    max_bytes: int = 16 * 1024 * 1024
    """Encoded frames larger than this are rejected."""
    emit_empty: bool = False
    """Publish frames without people too (otherwise only the first empty frame after people)."""


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
    """Batched person detection with per-camera tracking."""

    Options: ClassVar[type[msgspec.Struct]] = DetectOptions
    name: ClassVar[str] = "detect"
    consumes: ClassVar[tuple[str, ...]] = ("video/",)
    emits: ClassVar[tuple[str, ...]] = ("detections",)
    droppable: ClassVar[bool] = True
    degrade_steps: ClassVar[tuple[str, ...]] = ("half-resolution", "skip-alternate-frames")
    default_budget_ms: ClassVar[float] = 1000.0
    max_batch: ClassVar[int] = 8

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        self.opts: DetectOptions = ctx.options
        self.max_batch = max(1, self.opts.batch)  # type: ignore[misc]  # per-deployment batch size
        self.detector: Any = None
        self._had_people: dict[str, bool] = {}
        self._frame_no: dict[str, int] = {}

    async def start(self) -> None:
        from models.detector import PersonDetector

        o = self.opts
        self.detector = await self.ctx.run_blocking(
            lambda: PersonDetector(o.weights, self.ctx.device, o.conf, o.imgsz, o.class_map, o.tracker)
        )
        await self.ctx.run_blocking(self.detector.warm_up)  # the first frame must meet its budget too

    async def handle(self, msg: Message) -> None:
        await self.handle_batch([msg])

    async def handle_batch(self, msgs: list[Message]) -> None:
        frames: list[VideoFrame] = []
        for msg in msgs:
            reason = self._check(msg)
            if reason:
                await self.ctx.reject(msg, reason)
                continue
            assert isinstance(msg, VideoFrame)
            cam = self._camera(msg)
            n = self._frame_no[cam] = self._frame_no.get(cam, 0) + 1
            if self.level >= 2 and n % 2 == 0:  # "skip-alternate-frames"
                continue
            frames.append(msg)
        if not frames:
            return
        imgsz = self.opts.imgsz // 2 if self.level >= 1 else self.opts.imgsz  # "half-resolution"
        results = await self.ctx.run_blocking(self._infer, frames, imgsz)
        for msg, res in zip(frames, results, strict=True):
            if isinstance(res, str):
                await self.ctx.reject(msg, res)
                continue
            cam = self._camera(msg)
            had = self._had_people.get(cam, False)
            self._had_people[cam] = bool(res)
            if not res and not had and not self.opts.emit_empty:
                continue
            await self.ctx.publish(
                Detections(
                    time=msg.time,
                    room=msg.room,
                    # Per-camera topic (detections/room/camera): a droppable consumer keeps the latest
                    # detections of EACH camera, not one per room.
                    source=msg.source,
                    camera=msg.source,
                    persons=len(res),
                    boxes=[Box(b.x1, b.y1, b.x2, b.y2, round(b.score, 4), b.track) for b in res],
                    frame_seq=msg.seq,
                )
            )

    def _check(self, msg: Message) -> str | None:
        if not isinstance(msg, VideoFrame):
            return f"expected a video frame, got {type(msg).__name__}"
        if self.ctx.rooms and msg.room not in self.ctx.rooms:
            return f"unknown room {msg.room!r} (known: {', '.join(self.ctx.rooms)})"
        return check_frame(msg, self.opts.max_pixels, self.opts.max_bytes)

    @staticmethod
    def _camera(msg: Message) -> str:
        return f"{msg.room}/{msg.source}"

    def _infer(self, frames: list[VideoFrame], imgsz: int) -> list[Any]:
        """Decode every frame, then ONE batched forward pass; undecodable frames get an error string."""
        import cv2
        import numpy as np

        images, cams, slots = [], [], []
        out: list[Any] = [None] * len(frames)
        for i, f in enumerate(frames):
            img = cv2.imdecode(np.frombuffer(f.data, np.uint8), cv2.IMREAD_COLOR)
            if img is None or img.size == 0:
                out[i] = "corrupt JPEG (the decoder could not read it)"
                continue
            images.append(img)
            cams.append(self._camera(f))
            slots.append(i)
        for i, boxes in zip(slots, self.detector.track(images, cams, imgsz), strict=True):
            out[i] = boxes
        return out
