"""Where to look: a cheap motion detector per camera and the detector regions it implies (as Frigate does).

``MotionDetector`` keeps a running-average background of a small, blurred grayscale copy of each
frame (160 px wide: the JPEG decoder can produce it at a quarter of the cost of a full decode); pixels
that differ from it by more than ``threshold`` are motion, dilated and grouped into contour boxes in
frame pixels. A change over most of the frame (lights switched on, the camera's exposure jumping) is
reported as ``global_change`` and the background restarts from that frame.

``plan_regions`` turns motion boxes (and the boxes of tracks they touch, so the whole person is in
view when only an arm moved) into a few square regions of at least the detector's input size,
merged where they overlap and kept inside the frame; when they would cover most of the frame, one
full-frame pass is cheaper and ``plan_regions`` says so by returning the whole frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

Rect = tuple[int, int, int, int]
"""x1, y1, x2, y2 in frame pixels (x2, y2 exclusive)."""


@dataclass
class Motion:
    """What one frame's motion analysis found."""

    boxes: list[Rect]
    """Moving areas in frame pixels."""
    fraction: float
    """Share of the (small) frame that moved."""
    first: bool = False
    """First frame of the camera: no background yet, everything is unknown."""
    global_change: bool = False
    """Most of the frame changed at once; the background restarted from this frame."""


class MotionDetector:
    """Running-average background subtraction on a small grayscale frame (one per camera)."""

    def __init__(
        self,
        threshold: int = 25,
        alpha: float = 0.05,
        min_area: float = 0.0005,
        global_fraction: float = 0.6,
        width: int = 160,
    ) -> None:
        self.threshold = threshold
        """Grey-level difference from the background that counts as motion."""
        self.alpha = alpha
        """Background learning rate per frame (0.05 at 5 fps: a person who stops fades into it in ~5 s)."""
        self.min_area = min_area
        """Smallest moving blob kept, as a share of the frame (drops noise and leaves in the wind)."""
        self.global_fraction = global_fraction
        """A moving share above this is a lighting/exposure change, not a person."""
        self.width = width
        self._bg: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the background (the next frame is a first frame again)."""
        self._bg = None

    def small(self, gray: np.ndarray) -> np.ndarray:
        """``gray`` at the detector's working width, blurred against sensor noise and JPEG blocks."""
        import cv2

        h, w = gray.shape[:2]
        if w > self.width:
            gray = cv2.resize(gray, (self.width, max(1, round(h * self.width / w))), interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(gray, (5, 5), 0)

    def update(self, gray: np.ndarray, frame_shape: tuple[int, int]) -> Motion:
        """Motion in one frame: ``gray`` is any downscaled grayscale copy; boxes come back in frame pixels."""
        import cv2

        img = self.small(gray)
        fh, fw = frame_shape
        if self._bg is None or self._bg.shape != img.shape:
            self._bg = img.astype(np.float32)
            return Motion([], 1.0, first=True)
        diff = cv2.absdiff(img, cv2.convertScaleAbs(self._bg))
        mask = (diff > self.threshold).astype(np.uint8)
        fraction = float(mask.mean())
        if fraction > self.global_fraction:
            self._bg = img.astype(np.float32)
            return Motion([], fraction, global_change=True)
        cv2.accumulateWeighted(img, self._bg, self.alpha)
        if not fraction:
            return Motion([], 0.0)
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=2)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        sh, sw = img.shape[:2]
        sx, sy = fw / sw, fh / sh
        min_px = self.min_area * sw * sh
        boxes = []
        for c in contours:
            x, y, w, h = cv2.boundingRect(c)
            if w * h < min_px:
                continue
            boxes.append((int(x * sx), int(y * sy), min(fw, math.ceil((x + w) * sx)), min(fh, math.ceil((y + h) * sy))))
        return Motion(boxes, fraction)


# ------------------------------------------------------------------------------------------ regions


def area(r: Sequence[float]) -> float:
    return max(0.0, r[2] - r[0]) * max(0.0, r[3] - r[1])


def union(a: Sequence[float], b: Sequence[float]) -> Rect:
    return int(min(a[0], b[0])), int(min(a[1], b[1])), math.ceil(max(a[2], b[2])), math.ceil(max(a[3], b[3]))


def intersection(a: Sequence[float], b: Sequence[float]) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def gap(a: Sequence[float], b: Sequence[float]) -> float:
    """Distance between two boxes (0 if they touch or overlap)."""
    dx = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    dy = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    return math.hypot(dx, dy)


def square_around(box: Sequence[float], size: int, width: int, height: int, margin: float = 1.25) -> Rect:
    """A square of side max(``size``, ``margin`` × the box's longer side) centred on ``box``, inside the frame.

    Where the frame is narrower than that side, the region spans the frame in that direction.
    """
    side = max(size, margin * max(box[2] - box[0], box[3] - box[1]))
    w, h = min(width, math.ceil(side)), min(height, math.ceil(side))
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x1 = int(min(max(0.0, cx - w / 2), width - w))
    y1 = int(min(max(0.0, cy - h / 2), height - h))
    return x1, y1, x1 + w, y1 + h


def cluster(boxes: Iterable[Rect], distance: float) -> list[Rect]:
    """Merge boxes closer than ``distance`` into their bounding boxes, until none are."""
    out = list(boxes)
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                if gap(out[i], out[j]) <= distance:
                    out[i] = union(out[i], out[j])
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    return out


def plan_regions(
    motion: Sequence[Rect],
    tracks: Sequence[Sequence[float]],
    width: int,
    height: int,
    size: int,
    full_share: float = 0.6,
) -> list[Rect]:
    """Regions to run the detector on for these moving areas; ``[(0, 0, width, height)]`` for a full frame.

    Tracks a moving area touches are added to it whole. Areas closer than a quarter region are grouped;
    regions that overlap by more than a fifth of the smaller one are merged; if the regions' total area
    would be over ``full_share`` of the frame, the full frame is cheaper than the crops.
    """
    if not motion:
        return []
    grown = []
    for m in motion:
        box: Rect = tuple(m)  # type: ignore[assignment]
        for t in tracks:
            if intersection(box, t) > 0:
                box = union(box, t)
        grown.append(box)
    regions = [square_around(b, size, width, height) for b in cluster(grown, size / 4)]
    merged = True
    while merged:
        merged = False
        for i in range(len(regions)):
            for j in range(i + 1, len(regions)):
                a, b = regions[i], regions[j]
                if intersection(a, b) > 0.2 * min(area(a), area(b)):
                    regions[i] = square_around(union(a, b), size, width, height, margin=1.0)
                    del regions[j]
                    merged = True
                    break
            if merged:
                break
    if sum(area(r) for r in regions) > full_share * width * height:
        return [(0, 0, width, height)]
    return regions


def touches_inner_edge(box: Sequence[float], region: Rect, width: int, height: int, slack: float = 2.0) -> bool:
    """True if ``box`` is cut by an edge of ``region`` that is not also the frame's edge."""
    return (
        (box[0] <= region[0] + slack and region[0] > 0)
        or (box[1] <= region[1] + slack and region[1] > 0)
        or (box[2] >= region[2] - slack and region[2] < width)
        or (box[3] >= region[3] - slack and region[3] < height)
    )
