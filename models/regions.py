"""Detection only where it is needed: motion regions, tracks carried through still frames, keep-alive passes.

Per camera and frame, ``RegionDetector.process`` decides what the detector must look at:

* **nothing** when nothing moved and no track is due a check: the tracks are where they were, and
  are reported again with their ids (a still room, empty or not, costs a small grayscale decode);
* **regions** (crops of at least ``region_size`` around motion, grown to the tracks it touches, plus
  crops around still tracks every ``recheck_s``, around tracks that were just missed and around new
  boxes the tracker has yet to confirm), each run
  at ``region_size``; a person cut by a region's edge is looked at again in a larger region;
* **the whole frame** at ``full_size`` for a camera's first frame, after a global change (lights),
  when the regions would cover most of the frame anyway, and at least every ``keepalive_s`` (at most
  one camera's keep-alive per batch, so they spread out) — this is what finds a person who walked in
  while something else was moving, or who came in too slowly to count as motion.

Boxes found in regions are mapped to frame pixels and merged (NMS across overlapping regions, then a
box mostly inside another — a part of a person cut by a region's edge, or one person seen by two
regions — goes); the tracks outside every examined region are carried into the camera's tracker
unchanged, so they keep their ids.

Counting: a track counts as a person (``FrameOut.people``, its box's ``track`` >= 0) only once the
detector has found it in ``confirm_frames`` frames — new boxes and young tracks are looked at again
on the next frames until then — so a one-frame box (a part of someone, a shadow) never counts. A
counted track that the detector misses stays counted, at its last box, for ``MISSED_FRAMES`` frames
while it is looked for again (with ``score`` 0: not seen in this frame), then is forgotten. Boxes not
(yet) counted are still reported, with ``track=-1``.

With ``motion=False`` every frame is a whole-frame pass: what the detect stage did before regions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sensorium.models.detector import PersonBox, PersonDetector
from sensorium.models.motion import (
    MotionDetector,
    Rect,
    area,
    intersection,
    plan_regions,
    square_around,
    touches_inner_edge,
)
from sensorium.models.yolo import iou, nms, suppress_contained

#: Frames a missed track is still looked for before it is forgotten.
MISSED_FRAMES = 3
#: Boxes from overlapping regions with at least this IoU are the same person (the model's own NMS IoU).
MERGE_IOU = 0.7
#: ByteTrack's ``track_low_thresh`` (ultralytics' bytetrack.yaml): the weakest box its second association uses.
LOW_CONF = 0.1


@dataclass
class FrameIn:
    """One frame to process."""

    camera: str
    data: bytes
    """The JPEG."""
    time: float
    """Capture time (seconds): keep-alive and re-check intervals are measured on it."""
    width: int
    height: int


@dataclass
class FrameOut:
    """What one frame gave."""

    boxes: list[PersonBox] = field(default_factory=list)
    """Boxes in the frame; carried and held tracks included. Counted people have ``track`` >= 0."""
    work: str = "none"
    """"full", "regions" or "none" (no detector run)."""
    regions: list[Rect] = field(default_factory=list)
    """The regions examined (one full-frame region for "full")."""
    crops: int = 0
    """Detector inputs this frame needed (region retries included)."""
    retries: int = 0
    """Of those, larger second looks at people cut by a region's edge."""
    why: str = ""
    """Why the whole frame was looked at: "first", "keep-alive", "global change", "no motion" (at full
    size), "regions cover it" (the regions would cover most of the frame)."""
    error: str = ""
    """Why the frame could not be used ("" if it could)."""

    @property
    def people(self) -> int:
        """People counted in this frame: boxes of confirmed tracks."""
        return sum(1 for b in self.boxes if b.track >= 0)


@dataclass
class Settings:
    """How ``process`` works; the detect stage changes them as it moves along its degrade ladder."""

    motion: bool = True
    """Look only where something moved (False: the whole frame, every frame)."""
    full_size: int = 640
    """Detector input size for whole frames."""
    region_size: int = 320
    """Detector input size for regions (and their smallest side)."""
    keepalive_s: float = 5.0
    """Longest time between whole-frame passes of a camera."""
    recheck_s: float = 1.0
    """Longest time between looks at a still track."""
    threshold: int = 25
    """Motion threshold in grey levels."""
    confirm_frames: int = 2
    """Frames with a tracker id a track must be found in before it counts as a person (1: as soon as the
    tracker gives an id; ByteTrack gives one on a box's second frame, on a camera's first frame at once)."""
    hold_missed: bool = True
    """Keep a counted track that was missed (at its last box) while it is looked for again."""
    contain: float | None = None
    """Merge ratio across regions (``models.yolo.suppress_contained``); None: the detector's."""
    cover_full: bool = True
    """Where the regions would cover most of the frame, run the whole frame at ``full_size`` (False: at
    ``region_size``, cheaper but a person filling the frame splits into parts there)."""
    low_conf: float = LOW_CONF
    """Boxes scored from this up to the detector's ``conf`` go to the tracker too, which matches them only to
    tracks it already has (ByteTrack's second association: ``track_low_thresh``): a known person the model
    scores low for a while keeps their track; such a box alone never counts nor starts a track, and only
    counted tracks get them — a young track must be found above ``conf`` to be confirmed (0: off)."""
    keep_whole: bool = True
    """A box inside a known person's larger box, where a region's edge cut them or nothing moved, takes their
    whole box (``_whole``): the track does not shrink to a part of a still person and lose them."""
    small_retry: bool = True
    """A whole frame at ``full_size`` where the detector found nobody is looked at again at ``region_size``:
    the bundled model misses a person close to the camera (a face or torso filling the view) at the large
    scale and finds them at the small one."""


@dataclass
class _Track:
    box: PersonBox
    checked: float
    missed: int = 0


@dataclass
class _Camera:
    motion: MotionDetector
    last_full: float = -math.inf
    last_time: float = -math.inf
    tracks: dict[int, _Track] = field(default_factory=dict)
    """Confirmed tracks in the last output."""
    missing: dict[int, _Track] = field(default_factory=dict)
    """Tracks examined and not found recently: looked for again."""
    pending: list[PersonBox] = field(default_factory=list)
    """New boxes the tracker has not confirmed yet: looked at again next frame, so it can."""
    found: dict[int, int] = field(default_factory=dict)
    """Track id → frames the detector found it in (carried frames do not count)."""
    counted: set[int] = field(default_factory=set)
    """Tracks found in ``confirm_frames`` frames: they count as people."""


@dataclass
class _Job:
    """One frame's detector work in a batch."""

    index: int
    frame: FrameIn
    cam: _Camera
    image: np.ndarray | None = None
    regions: list[Rect] = field(default_factory=list)
    full: bool = False
    why: str = ""
    retries: int = 0
    found: list[list[np.ndarray]] = field(default_factory=list)
    """Per region: boxes in frame pixels."""
    motion: list[Rect] | None = None
    """Where something moved (frame pixels); None where that is not known (no motion detection, a camera's first
    frame, a global change, a keep-alive pass)."""


def _reduced_flag(width: int) -> int:
    """The JPEG decoder's cheapest grayscale scale that still leaves >= 160 px of width."""
    import cv2

    for factor, flag in ((8, cv2.IMREAD_REDUCED_GRAYSCALE_8), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4)):
        if width >= 160 * factor:
            return flag
    return cv2.IMREAD_REDUCED_GRAYSCALE_2 if width >= 320 else cv2.IMREAD_GRAYSCALE


class RegionDetector:
    """Per-camera motion, region planning and track carrying around one ``PersonDetector``."""

    def __init__(self, detector: PersonDetector, settings: Settings | None = None) -> None:
        self.detector = detector
        self.settings = settings or Settings()
        self._cams: dict[str, _Camera] = {}

    def reset(self, camera: str | None = None) -> None:
        """Forget one camera's (or every camera's) background and tracks."""
        if camera is None:
            self._cams.clear()
        else:
            self._cams.pop(camera, None)
        self.detector.reset(camera)

    def _camera(self, name: str) -> _Camera:
        if name not in self._cams:
            self._cams[name] = _Camera(MotionDetector(threshold=self.settings.threshold))
        return self._cams[name]

    # -------------------------------------------------------------------------------------- plan

    def _plan(self, job: _Job, keepalive_free: bool) -> tuple[str, bool]:
        """(error, took the batch's keep-alive slot); fills ``job.regions``/``job.full``."""
        import cv2

        s, f, cam = self.settings, job.frame, job.cam
        if not s.motion:
            job.full, job.why = True, "no motion"
            return "", False
        gray = cv2.imdecode(np.frombuffer(f.data, np.uint8), _reduced_flag(f.width))
        if gray is None or gray.size == 0:
            return "corrupt JPEG (the decoder could not read it)", False
        motion = cam.motion.update(gray, (f.height, f.width))
        if motion.first or motion.global_change:
            job.full, job.why = True, "first" if motion.first else "global change"
            return "", False
        if keepalive_free and f.time - cam.last_full >= s.keepalive_s:
            job.full, job.why = True, "keep-alive"
            return "", True
        job.motion = list(motion.boxes)
        live = [t.box.xyxy for t in cam.tracks.values()]
        regions = plan_regions(motion.boxes, live, f.width, f.height, s.region_size)
        looked = regions[:]
        due = [t.box for tid, t in cam.tracks.items() if f.time - t.checked >= s.recheck_s or tid not in cam.counted]
        for box in [*due, *(t.box for t in cam.missing.values()), *cam.pending]:
            if not any(_inside(box.xyxy, r) for r in looked):
                r = square_around(box.xyxy, s.region_size, f.width, f.height)
                regions.append(r)
                looked.append(r)
        if any(area(r) >= 0.9 * f.width * f.height for r in regions):
            # The whole frame at full size: at the region size a person filling much of the frame splits into
            # parts and a small one is missed (a panning camera was counted right on half the frames).
            job.regions, job.why = [(0, 0, f.width, f.height)], "regions cover it"
            job.full = s.cover_full
        else:
            job.regions = regions
        return "", False

    # ----------------------------------------------------------------------------------- process

    def process(self, frames: list[FrameIn]) -> list[FrameOut]:
        """Detect people in a batch of frames (any cameras); one detector call per input size and round."""
        import cv2

        outs = [FrameOut() for _ in frames]
        jobs: list[_Job] = []
        keepalive_free = True
        for i, f in enumerate(frames):
            cam = self._camera(f.camera)
            if f.time < cam.last_time - 1.0:  # the camera's clock went back (a replay, a restart): start over
                self.reset(f.camera)
                cam = self._camera(f.camera)
            cam.last_time = f.time
            job = _Job(i, f, cam)
            err, took = self._plan(job, keepalive_free)
            keepalive_free &= not took
            if err:
                outs[i].error = err
                continue
            if job.full or job.regions:
                img = cv2.imdecode(np.frombuffer(f.data, np.uint8), cv2.IMREAD_COLOR)
                if img is None or img.size == 0:
                    outs[i].error = "corrupt JPEG (the decoder could not read it)"
                    continue
                job.image = img
                h, w = img.shape[:2]
                if job.full:
                    job.regions = [(0, 0, w, h)]
                    job.cam.last_full = f.time
            jobs.append(job)

        work = [j for j in jobs if j.image is not None]
        self._detect(work, [list(j.regions) for j in work], first=True)
        self._retry_small(work)
        self._retry_cut(work)
        for job in jobs:
            outs[job.index] = self._finish(job)
        return outs

    def _detect(
        self, jobs: list[_Job], regions: list[list[Rect]], first: bool, full_size: int = 0
    ) -> list[list[list[np.ndarray]]]:
        """Run the detector on every region of every job (grouped by input size; whole frames at ``full_size``,
        default the settings'); boxes in frame pixels."""
        s = self.settings
        full_size = full_size or s.full_size
        crops: dict[int, list[tuple[int, int, np.ndarray]]] = {}
        for ji, (job, regs) in enumerate(zip(jobs, regions, strict=True)):
            assert job.image is not None
            for ri, (x1, y1, x2, y2) in enumerate(regs):
                size = full_size if job.full else s.region_size
                crops.setdefault(size, []).append((ji, ri, job.image[y1:y2, x1:x2]))
        found: list[list[list[np.ndarray]]] = [[[] for _ in regs] for regs in regions]
        for size, items in crops.items():
            results = self.detector.detect_crops([c for _, _, c in items], size, s.low_conf)
            for (ji, ri, _), boxes in zip(items, results, strict=True):
                region = regions[ji][ri]
                h, w = jobs[ji].image.shape[:2]  # type: ignore[union-attr]
                for b in boxes:
                    fb = np.array([b[0] + region[0], b[1] + region[1], b[2] + region[0], b[3] + region[1], b[4], 0.0])
                    fb[5] = touches_inner_edge(fb, region, w, h)  # cut by the region: maybe not the whole person
                    found[ji][ri].append(fb)
        if first:
            for job, f in zip(jobs, found, strict=True):
                job.found = f
        return found

    def _retry_small(self, jobs: list[_Job]) -> None:
        """Whole frames at full size where nobody was found: the whole frame again at the region size."""
        s, conf = self.settings, self.detector.conf
        again = [
            j
            for j in jobs
            if s.small_retry
            and j.full
            and s.region_size < s.full_size
            and not any(b[4] > conf for boxes in j.found for b in boxes)
        ]
        if not again:
            return
        whole = [[job.regions[0]] for job in again]
        found = self._detect(again, whole, first=False, full_size=s.region_size)
        for job, f in zip(again, found, strict=True):
            job.regions.append(job.regions[0])
            job.found.extend(f)
            job.retries += 1

    def _retry_cut(self, jobs: list[_Job]) -> None:
        """Look again, in a larger region, at people cut by a region's edge (one round)."""
        s = self.settings
        retry: list[list[Rect]] = []
        cut: list[list[tuple[int, int]]] = []
        for job in jobs:
            regs, which = [], []
            if not job.full:
                h, w = job.image.shape[:2]  # type: ignore[union-attr]
                for ri, (region, boxes) in enumerate(zip(job.regions, job.found, strict=True)):
                    for bi, b in enumerate(boxes):
                        if b[5] and b[4] > self.detector.conf:
                            bigger = square_around(_grow_cut(b, region, w, h), s.region_size, w, h, margin=1.1)
                            if area(bigger) > area(region) * 1.05 or not _inside(b, bigger):
                                regs.append(bigger)
                                which.append((ri, bi))
            retry.append(regs)
            cut.append(which)
        if not any(retry):
            return
        found = self._detect(jobs, retry, first=False)
        for job, regs, which, again in zip(jobs, retry, cut, found, strict=True):
            for (ri, bi), region, boxes in zip(which, regs, again, strict=True):
                old = job.found[ri][bi]
                if any(intersection(b, old) >= 0.6 * area(old) for b in boxes):
                    job.found[ri][bi] = np.zeros(0)  # the larger look has the whole person
                job.regions.append(region)
                job.found.append(boxes)
                job.retries += 1

    def _finish(self, job: _Job) -> FrameOut:
        """Merge a frame's boxes, carry the tracks nobody looked at, update the tracker and track states."""
        cam, t = job.cam, job.frame.time
        if job.image is None:  # nothing to look at: the tracks are where they were
            cam.pending = []
            held = [tr for tid, tr in cam.missing.items() if tid in cam.counted and self.settings.hold_missed]
            out = [self._out(cam, tr.box) for tr in cam.tracks.values()]
            return FrameOut(boxes=out + [self._out(cam, tr.box, held=True) for tr in held], work="none")
        contain = self.detector.contain if self.settings.contain is None else self.settings.contain
        conf = self.detector.conf
        examined = job.regions
        known = [tr.box for tr in (*cam.tracks.values(), *cam.missing.values())]
        merged = _merge([b for bs in job.found for b in bs if b.size], contain, conf)
        # Weak boxes only for counted tracks: a young track (a window the model half takes for a person) must be
        # found above the floor again to be confirmed, not kept alive by its weak echoes until it is.
        counted = [tr.box.xyxy for tid, tr in (*cam.tracks.items(), *cam.missing.items()) if tid in cam.counted]
        merged = [b for b in merged if b.score > conf or any(iou(b.xyxy, k) > 0.3 for k in counted)]
        if self.settings.keep_whole:
            motion = job.motion if job.why != "keep-alive" else None
            merged = [_whole(b, known, examined, motion) for b in merged]
            # Two parts of one person both took their whole box: one box.
            merged = [b for i, b in enumerate(merged) if not any(iou(b.xyxy, o.xyxy) > MERGE_IOU for o in merged[:i])]
        fresh = merged
        carried = [
            _copy(tr.box)
            for tr in cam.tracks.values()
            if not any(_inside(tr.box.xyxy, r) for r in examined)
            and not any(iou(tr.box.xyxy, b.xyxy) > 0.3 or _same(tr.box.xyxy, b.xyxy, contain) for b in fresh)
        ]
        boxes = self.detector.update_tracks(job.frame.camera, fresh + carried, job.image)
        ids_before = {**cam.missing, **cam.tracks}
        seen: dict[int, _Track] = {}
        n_fresh = len(fresh)
        for k, b in enumerate(boxes):
            if k >= n_fresh and b.track < 0:  # a carried box the tracker did not echo keeps its id
                b.track = carried[k - n_fresh].track
            if b.track < 0:
                continue
            old = ids_before.get(b.track)
            seen[b.track] = _Track(b, t if k < n_fresh else (old.checked if old else t))
            if k < n_fresh and b.score > conf:  # a weak box keeps a track, it does not confirm one
                cam.found[b.track] = cam.found.get(b.track, 0) + 1
                if cam.found[b.track] >= self.settings.confirm_frames:
                    cam.counted.add(b.track)
        missing = {}
        for tid, tr in ids_before.items():
            if tid in seen:
                continue
            if tr.missed + 1 <= MISSED_FRAMES and any(_inside(tr.box.xyxy, r) for r in examined):
                missing[tid] = _Track(tr.box, tr.checked, tr.missed + 1)
        cam.tracks, cam.missing = seen, missing
        for tid in [tid for tid in cam.found if tid not in seen and tid not in missing]:
            del cam.found[tid]
            cam.counted.discard(tid)
        # A new box over a known person is more likely a second, weaker box of them (the bundled model makes
        # those) than a new person: only new boxes away from the tracks get the extra look.
        known = [b.xyxy for b in boxes if b.track >= 0]
        cam.pending = [
            _copy(b)
            for b in boxes
            if b.track < 0
            and b.score > conf
            and not any(intersection(b.xyxy, k) > 0.5 * min(area(b.xyxy), area(k)) for k in known)
        ]
        boxes = [b for b in boxes if b.track >= 0 or b.score > conf]  # weak boxes no track took: not reported
        held = [tr.box for tid, tr in missing.items() if tid in cam.counted] if self.settings.hold_missed else []
        return FrameOut(
            boxes=[self._out(cam, b) for b in boxes] + [self._out(cam, b, held=True) for b in held],
            work="full" if job.full else "regions",
            regions=list(job.regions),
            crops=len(job.regions),
            retries=job.retries,
            why=job.why,
        )

    @staticmethod
    def _out(cam: _Camera, b: PersonBox, held: bool = False) -> PersonBox:
        """A copy of a box for the output: ``track=-1`` unless its track counts (is confirmed); score 0 for a
        held track (missed in this frame: still counted, but no evidence that the person is there)."""
        return PersonBox(b.x1, b.y1, b.x2, b.y2, 0.0 if held else b.score, b.track if b.track in cam.counted else -1)


def _whole(box: PersonBox, known: list[PersonBox], regions: list[Rect], motion: list[Rect] | None) -> PersonBox:
    """A box that is a part of a known person → their whole box, at this box's score, when it lies mostly inside
    their larger box and either no region it came from holds that whole box (a region's edge cut them) or
    nothing moved there (``motion``; None: unknown) — a person who did not move did not shrink: the model
    scored a part of them this time. The track keeps the person's extent, and its next re-check looks at all
    of them instead of following the part (and losing them on the look after)."""
    b = box.xyxy
    if any(iou(b, k.xyxy) > 0.5 for k in known):  # a known person seen whole (in a group: not a part of another)
        return box
    for k in known:
        whole = k.xyxy
        if area(whole) <= 1.3 * area(b) or intersection(b, whole) < 0.7 * area(b):
            continue
        still = motion is not None and not any(intersection(whole, m) > 0 for m in motion)
        if not still and any(intersection(b, r) >= 0.9 * area(b) and _holds(r, whole) for r in regions):
            continue
        return PersonBox(*whole, score=box.score)
    return box


def _holds(region: Rect, box: tuple[float, ...]) -> bool:
    """True if the box lies inside the region (2 px slack)."""
    return region[0] <= box[0] + 2 and region[1] <= box[1] + 2 and box[2] <= region[2] + 2 and box[3] <= region[3] + 2


def _grow_cut(box: np.ndarray, region: Rect, width: int, height: int) -> tuple[float, float, float, float]:
    """Where the rest of a person cut by a region's edge can be: the box extended past each cut edge."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    w, h = x2 - x1, y2 - y1
    if region[0] > 0 and x1 <= region[0] + 2:
        x1 -= w
    if region[2] < width and x2 >= region[2] - 2:
        x2 += w
    if region[1] > 0 and y1 <= region[1] + 2:
        y1 -= h
    if region[3] < height and y2 >= region[3] - 2:
        y2 += h
    return max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)


def _same(a: tuple[float, ...], b: tuple[float, ...], contain: float) -> bool:
    """True if one box lies mostly inside the other (``contain`` of the smaller one's area; 0: never)."""
    return contain > 0 and intersection(a, b) >= contain * min(area(a), area(b))


def _inside(box: tuple[float, ...] | np.ndarray, region: Rect) -> bool:
    """True if the box's centre is inside the region."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return region[0] <= cx < region[2] and region[1] <= cy < region[3]


def _copy(b: PersonBox) -> PersonBox:
    return PersonBox(b.x1, b.y1, b.x2, b.y2, b.score, b.track)


def _merge(rows: list[np.ndarray], contain: float = 0.0, conf: float = 0.0) -> list[PersonBox]:
    """One box per person from boxes of overlapping regions: NMS, then boxes mostly inside (or holding) a
    better one go (``contain``, as within one detector input), then a part of a person cut by a region's
    edge goes if it lies mostly inside a larger box (that region's neighbour saw the whole person).
    Weak boxes (scored ``conf`` or less) follow, those that overlap no box above ``conf``."""
    if not rows:
        return []
    strong = [r for r in rows if r[4] > conf]
    out = _merge_strong(strong, contain) if strong else []
    weak = [r for r in rows if r[4] <= conf]
    if weak:
        arr = np.stack(weak).astype(np.float32)
        for i in nms(arr[:, :4], arr[:, 4], 0.3):
            a = arr[i]
            if not any(iou(a, b.xyxy) > 0.3 or _same(tuple(a[:4]), b.xyxy, max(contain, 0.5)) for b in out):
                out.append(PersonBox(*map(float, a[:4]), score=float(a[4])))
    return out


def _merge_strong(rows: list[np.ndarray], contain: float) -> list[PersonBox]:
    arr = np.stack(rows).astype(np.float32)
    keep = nms(arr[:, :4], arr[:, 4], MERGE_IOU)
    keep = keep[suppress_contained(arr[keep, :4], arr[keep, 4], contain)]
    kept = [arr[i] for i in keep]
    out = []
    for i, a in enumerate(kept):
        inner = a[5] and any(
            j != i and intersection(a, b) >= 0.7 * area(a) and area(b) > area(a) for j, b in enumerate(kept)
        )
        if not inner:
            out.append(PersonBox(*map(float, a[:4]), score=float(a[4])))
    return out
