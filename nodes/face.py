"""Face recognition on person tracks: ``Detections`` + the frames they came from in, ``FaceRecognized`` out.

The stage keeps the last few frames of each camera by sequence number. For each tracked person box
it looks for a face in the box's crop; a track is recognized once, and again only when a clearly
better face of it shows up (bigger, more frontal, surer: ``better_ratio`` × the best quality so far),
never on every frame. Tracks already recognized are looked at again at most every ``recheck_s``.

Face work only where it pays (``gate``): a track whose last look found no face (turned away, too
far, face hidden) is looked at again only when it comes toward the camera (its box grew by
``approach_ratio``) or after ``retry_s`` (people turn round), not on every frame. Under load the
degrade ladder first re-checks less often, then looks only at tracks never looked at ("skip-faces").

A track that comes back after it was out of view (the camera's detections went on without it for
``return_s``) is recognized afresh: the tracker hands a returning person their old track id, while
presence has forgotten whose track it was (and may have seen them leave), so it needs a new face event.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec

from sensorium.pipeline.messages import Box, Detections, FaceRecognized, Message, VideoFrame
from sensorium.pipeline.stage import Library, Stage, StageContext, StageOptions


class FaceOptions(StageOptions):
    """``[stages.face]``."""

    recognizer: str = "auto"
    """"auto" (buffalo_l ArcFace if in ~/.insightface, else FaceNet), "facenet", or an ArcFace dir/ONNX."""
    detector: str = "auto"
    """Face detector: "mediapipe", "yunet", or "auto" (mediapipe, YuNet where mediapipe finds nothing)."""
    threshold: float | None = None
    """Cosine similarity needed to name a person (None: the recognizer's calibrated default)."""
    gallery: str = ""
    """Identity gallery file ("" = <data_dir>/gallery.db)."""
    det_conf: float = 0.5
    """Face detector confidence."""
    min_face: int = 20
    """Smallest face width in pixels worth recognizing."""
    better_ratio: float = 1.3
    """A track is recognized again when a face this many times better than its best so far appears."""
    recheck_s: float = 1.0
    """Seconds between looks at an already recognized track."""
    gate: bool = True
    """Look again at a track without a face only when it comes closer or after ``retry_s`` (False: every frame)."""
    approach_ratio: float = 1.15
    """A faceless track whose box grew this much since the last look is coming closer: look again."""
    retry_s: float = 1.0
    """Seconds between looks at a faceless track that is not coming closer."""
    frames_kept: int = 8
    """Frames kept per camera to match detections to."""
    frame_slack_s: float = 0.3
    """If a detection's own frame was dropped, use a kept frame of the camera this close in time."""
    track_ttl_s: float = 60.0
    """Forget a track not seen for this long."""
    return_s: float = 2.0
    """A track back after this long out of view is recognized again (shorter than presence keeps a name:
    its ``count_window`` + ``settle``)."""


@dataclass
class _Track:
    quality: float = 0.0
    person: str = ""
    score: float = 0.0
    checked: float = 0.0
    seen: float = 0.0
    looks: int = 0
    faceless: bool = False
    """The last look found no face."""
    height: float = 0.0
    """Box height at the last look."""
    missed: bool = False
    """A detection of its camera came without it since it was last seen."""


class FaceStage(Stage):
    """Recognize faces once per person track (again on a clearly better face)."""

    Options: ClassVar[type[msgspec.Struct]] = FaceOptions
    name: ClassVar[str] = "face"
    serves: ClassVar[str] = "camera"
    consumes: ClassVar[tuple[type[Message], ...]] = (
        VideoFrame,
        Detections,
    )
    emits: ClassVar[tuple[type[Message], ...]] = (FaceRecognized,)
    answers: ClassVar[tuple[type[Message], ...]] = (FaceRecognized,)
    libraries: ClassVar[tuple[Library, ...]] = (Library("cv2", "opencv-python-headless (sensorium[workers])"),)
    droppable: ClassVar[bool] = True
    nice: ClassVar[int] = 10  # voice first when the cores are short: vision falls behind and degrades first
    degrade_steps: ClassVar[tuple[str, ...]] = ("recheck-less", "skip-faces")
    default_budget_ms: ClassVar[float] = 2000.0  # from the frame's capture: detection time is in it
    max_batch: ClassVar[int] = 32

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        self.opts: FaceOptions = ctx.options
        self.pipeline: Any = None
        self.gallery: Any = None
        self.threshold = 0.0
        self._frames: dict[str, deque[VideoFrame]] = {}
        self._tracks: dict[tuple[str, int], _Track] = {}
        self.looks = 0
        """Person crops searched for faces (for tests and benchmarks)."""
        self.recognitions = 0
        """Faces embedded and compared with the gallery."""
        self.skipped = 0
        """Looks the gate saved (faceless tracks not coming closer)."""
        self.now: Callable[[], float] = time.monotonic
        """Clock of re-check intervals (a benchmark replaying a clip off real time sets the clip's)."""

    async def start(self) -> None:
        from sensorium.models.faces import FacePipeline
        from sensorium.models.gallery import Gallery

        o = self.opts
        self.pipeline = await self.ctx.run_blocking(
            lambda: FacePipeline(o.recognizer, o.detector, self.ctx.device, o.det_conf, o.min_face)
        )
        await self.ctx.run_blocking(self.pipeline.warm_up)  # the first face must meet its budget too
        self.threshold = o.threshold if o.threshold is not None else self.pipeline.default_threshold
        path = o.gallery or str(self.ctx.data_dir / "gallery.db")
        self.gallery = await self.ctx.run_blocking(Gallery, path)
        await self.ctx.run_blocking(self.gallery.check)

    async def stop(self) -> None:
        if self.pipeline is not None:
            await self.ctx.run_blocking(self.pipeline.close)
        if self.gallery is not None:
            self.gallery.close()

    async def handle(self, msg: Message) -> None:
        if isinstance(msg, VideoFrame):
            q = self._frames.setdefault(f"{msg.room}/{msg.source}", deque(maxlen=max(1, self.opts.frames_kept)))
            q.append(msg)
        elif isinstance(msg, Detections):
            await self._on_detections(msg)
        else:
            await self.ctx.reject(msg, f"face stage takes video frames and detections, not {type(msg).__name__}")

    async def handle_batch(self, msgs: list[Message]) -> None:
        # Frames first: a detection in the same batch may point at one of them.
        for msg in sorted(msgs, key=lambda m: not isinstance(m, VideoFrame)):
            await self.handle(msg)

    async def _on_detections(self, det: Detections) -> None:
        cam = f"{det.room}/{det.camera}"
        now = self.now()
        self._expire(now)
        recheck = self.opts.recheck_s * (4 if self.level >= 1 else 1)  # "recheck-less"
        todo: list[Box] = []
        shown = {b.track for b in det.boxes}
        for (c, track), t in self._tracks.items():
            if c == cam and track not in shown:
                t.missed = True
        for b in det.boxes:
            if b.track < 0:
                continue  # untracked boxes: we could not tell whether we already know this face
            t = self._tracks.get((cam, b.track))
            if t is None or (t.missed and now - t.seen >= self.opts.return_s):
                t = self._tracks[(cam, b.track)] = _Track()  # new, or back in view: whose it is must be said again
            t.seen = now
            t.missed = False
            if self._due(t, b, now, recheck):
                todo.append(b)
        if not todo:
            return
        kept = self._frames.get(cam, ())
        frame = next((f for f in kept if f.seq == det.frame_seq), None)
        if frame is None:  # its frame was superseded while we were busy: the nearest one in time will do
            near = min(kept, key=lambda f: abs(f.time - det.time), default=None)
            if near is not None and abs(near.time - det.time) <= self.opts.frame_slack_s:
                frame = near
        if frame is None:
            self.ctx.log.debug("face: frame %s of %s no longer kept", det.frame_seq, cam)
            return
        found = await self.ctx.run_blocking(self._faces, cam, frame.data, todo)
        if found is None:
            await self.ctx.reject(frame, "corrupt JPEG (the decoder could not read it)")
            return
        for box, quality, emb in found:
            t = self._tracks[(cam, box.track)]
            t.checked = now
            t.looks += 1
            t.faceless = quality <= 0.0
            t.height = box.y2 - box.y1
            if emb is None:
                continue
            self.recognitions += 1
            person, score = await self.ctx.run_blocking(
                self.gallery.identify, "face", self.pipeline.model_id, emb, self.threshold
            )
            t.quality, t.person, t.score = quality, person, score
            await self.ctx.publish(
                FaceRecognized(
                    time=det.time,
                    room=det.room,
                    camera=det.camera,
                    person=person,
                    score=round(float(score), 4),
                    track=box.track,
                )
            )

    def _due(self, t: _Track, b: Box, now: float, recheck: float) -> bool:
        """Whether a track's face is worth a look now."""
        if t.looks == 0:
            return True
        if self.level >= 2:  # "skip-faces": only tracks never looked at
            return False
        if t.person:
            return now - t.checked >= recheck
        if not self.opts.gate or not t.faceless:
            return True  # today's rule: a track without a name is looked at on every frame
        if (b.y2 - b.y1) >= t.height * self.opts.approach_ratio or now - t.checked >= self.opts.retry_s:
            return True
        self.skipped += 1
        return False

    def _faces(self, cam: str, data: bytes, boxes: list[Box]) -> list[tuple[Box, float, Any]] | None:
        """For each box: its face quality and, if worth (re)recognizing, the face's embedding."""
        import cv2
        import numpy as np

        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            return None
        h, w = img.shape[:2]
        picked: dict[int, tuple[Any, np.ndarray, tuple[float, float, float, float], float]] = {}
        for i, b in enumerate(boxes):
            self.looks += 1
            # The head is in the top part of a person box; a little slack catches boxes cut at the head.
            bw, bh = b.x2 - b.x1, b.y2 - b.y1
            x1, x2 = int(max(0, b.x1 - 0.1 * bw)), int(min(w, b.x2 + 0.1 * bw))
            y1, y2 = int(max(0, b.y1 - 0.05 * bh)), int(min(h, b.y2))
            if x2 - x1 < self.opts.min_face or y2 - y1 < self.opts.min_face:
                continue
            crop = img[y1:y2, x1:x2]
            best = None
            for f in self.pipeline.detect(crop):
                fb = (f.box[0] + x1, f.box[1] + y1, f.box[2] + x1, f.box[3] + y1)
                c = _centrality(fb, f.score, b)
                if c > 0 and (best is None or c > best[3]):
                    best = (f, crop, fb, c)
            if best is not None:
                picked[i] = best
        out: list[tuple[Box, float, Any]] = []
        for i, b in enumerate(boxes):
            if i not in picked:
                out.append((b, 0.0, None))
                continue
            face, crop, fb, c = picked[i]
            # Overlapping boxes can see the same face: it belongs to the box that holds it most centrally.
            if any(j != i and _iou(fb, p[2]) > 0.5 and p[3] > c for j, p in picked.items()):
                out.append((b, 0.0, None))
                continue
            t = self._tracks.get((cam, b.track))
            if t is not None and t.person and face.quality < t.quality * self.opts.better_ratio:
                out.append((b, face.quality, None))  # not clearly better than the face we recognized
                continue
            out.append((b, face.quality, self.pipeline.embed(crop, [face])[0]))
        return out

    def _expire(self, now: float) -> None:
        ttl = self.opts.track_ttl_s
        for key in [k for k, t in self._tracks.items() if now - t.seen > ttl]:
            del self._tracks[key]


def _centrality(fb: tuple[float, float, float, float], score: float, b: Box) -> float:
    """How plausibly a face (frame box ``fb``) is the head of person box ``b``: 0 outside its top part."""
    cx, cy = (fb[0] + fb[2]) / 2, (fb[1] + fb[3]) / 2
    bw, bh = b.x2 - b.x1, b.y2 - b.y1
    if not (b.x1 <= cx <= b.x2 and b.y1 - 0.05 * bh <= cy <= b.y1 + 0.6 * bh):
        return 0.0
    off = abs(cx - (b.x1 + b.x2) / 2) / max(bw / 2, 1.0)
    return score * (1.0 - 0.5 * off)


def _iou(a: tuple[float, float, float, float], c: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], c[2]) - max(a[0], c[0]))
    iy = max(0.0, min(a[3], c[3]) - max(a[1], c[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (c[2] - c[0]) * (c[3] - c[1]) - inter
    return inter / union if union > 0 else 0.0
