"""A generated camera clip: people walking through a mostly still room, from packaged photos.

The room is scikit-image's garage photo (``motorcycle_left.png``, no person in it); the people are
cut out of ultralytics' ``bus.jpg`` and scikit-image's ``astronaut.png`` with OpenCV's GrabCut and
moved along fixed paths. Each frame gets a little sensor noise and the exposure drifts slowly, as a
real camera's do. Everything is deterministic: the same clip on every machine, built in a few
seconds, nothing downloaded.

Script (at 5 fps, 30 s):

* a man in a coat stands at the left the whole time (a still person: found once, then carried and
  re-checked);
* another man walks left → right from 1 s to 7 s, in front of him, and back, smaller (farther
  away), from 8 s to 15 s;
* the astronaut (enrolled as "eileen" in the benchmark's gallery) walks in from the right at 16 s,
  stops from 19 s to 25 s, and walks out to the right by 29 s;
* from 29 s only the still man is left.

The sizes and places are where the bundled person model sees these cut-outs clearly (it misses the
walking man at 300 px and splits the astronaut into several boxes in the middle of the frame), so
the clip measures where the detector looks, not how the model copes with odd cut-outs.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 640, 480
FPS = 5.0
SECONDS = 30.0


def progress_logging() -> None:
    """The vision benchmarks' progress lines on stderr; the model libraries' and stages' chatter only as warnings."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("ultralytics", "sensorium"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _pkg(package: str, rel: str) -> Path:
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the walking-people clip needs the {package!r} package installed")
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed {package}")
    return path


def _read(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"could not read {path}")
    return img


@dataclass(frozen=True)
class Cutout:
    """A person cut out of a photo: BGR pixels and a soft 0–1 mask of the same size."""

    image: np.ndarray
    mask: np.ndarray


@functools.cache
def _cutout(name: str) -> Cutout:
    """GrabCut of one person from a packaged photo, inside a known person box (with a margin)."""
    import cv2

    sources = {
        # photo, person box (x1, y1, x2, y2) in that photo
        "walker": (_pkg("ultralytics", "assets/bus.jpg"), (211, 391, 347, 872)),
        "coat": (_pkg("ultralytics", "assets/bus.jpg"), (46, 384, 216, 907)),
        "eileen": (_pkg("skimage", "data/astronaut.png"), (0, 29, 379, 511)),
    }
    path, (x1, y1, x2, y2) = sources[name]
    img = _read(path)
    h, w = img.shape[:2]
    mx, my = int(0.08 * (x2 - x1)), int(0.04 * (y2 - y1))
    cx1, cy1, cx2, cy2 = max(0, x1 - mx), max(0, y1 - my), min(w, x2 + mx), min(h, y2 + my)
    crop = np.ascontiguousarray(img[cy1:cy2, cx1:cx2])
    mask = np.zeros(crop.shape[:2], np.uint8)
    rect = (x1 - cx1, y1 - cy1, x2 - x1, y2 - y1)
    rect = (max(1, rect[0]), max(1, rect[1]), min(rect[2], crop.shape[1] - 2), min(rect[3], crop.shape[0] - 2))
    cv2.setRNGSeed(0)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(crop, mask, rect, bgd, fgd, 4, cv2.GC_INIT_WITH_RECT)
    fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)
    fg = cv2.GaussianBlur(fg, (7, 7), 0)  # soft edges: no hard cut-out outline for the detector to key on
    return Cutout(crop, fg)


@functools.cache
def room() -> np.ndarray:
    """The still room: scikit-image's garage photo at 640×480."""
    import cv2

    img = _read(_pkg("skimage", "data/motorcycle_left.png"))
    return cv2.resize(img, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class Actor:
    """A cut-out on a path: keyframes (time s, x centre, feet y, height px); absent outside them."""

    who: str
    keys: tuple[tuple[float, float, float, float], ...]
    mirror: bool = False

    def at(self, t: float) -> tuple[float, float, float] | None:
        k = self.keys
        if t < k[0][0] or t > k[-1][0]:
            return None
        for (t0, x0, y0, h0), (t1, x1, y1, h1) in itertools.pairwise(k):
            if t0 <= t <= t1:
                a = (t - t0) / (t1 - t0) if t1 > t0 else 0.0
                return x0 + a * (x1 - x0), y0 + a * (y1 - y0), h0 + a * (h1 - h0)
        return k[-1][1], k[-1][2], k[-1][3]


ACTORS = (
    Actor("coat", ((0.0, 100, 470, 300), (SECONDS, 100, 470, 300))),
    Actor("walker", ((1.0, -60, 470, 230), (7.0, 700, 470, 230))),
    Actor("walker", ((8.0, 700, 420, 200), (15.0, -60, 420, 200)), mirror=True),
    Actor("eileen", ((16.0, 780, 480, 300), (19.0, 450, 480, 300), (25.0, 450, 480, 300), (29.0, 800, 480, 300))),
)


def _paste(frame: np.ndarray, cut: Cutout, cx: float, feet: float, height: float, mirror: bool) -> None:
    import cv2

    s = height / cut.image.shape[0]
    w, h = max(1, round(cut.image.shape[1] * s)), max(1, round(height))
    img = cv2.resize(cut.image, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    mask = cv2.resize(cut.mask, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    if mirror:
        img, mask = img[:, ::-1], mask[:, ::-1]
    x1, y1 = round(cx - w / 2), round(feet - h)
    fx1, fy1, fx2, fy2 = max(0, x1), max(0, y1), min(WIDTH, x1 + w), min(HEIGHT, y1 + h)
    if fx1 >= fx2 or fy1 >= fy2:
        return
    sub = frame[fy1:fy2, fx1:fx2]
    m = mask[fy1 - y1 : fy2 - y1, fx1 - x1 : fx2 - x1]
    p = img[fy1 - y1 : fy2 - y1, fx1 - x1 : fx2 - x1]
    sub[:] = m * p + (1 - m) * sub


def frame_at(t: float, noise: float = 2.5) -> np.ndarray:
    """The clip's frame at ``t`` seconds (BGR uint8)."""
    frame = room().astype(np.float32)
    frame *= 1.0 + 0.02 * np.sin(2 * np.pi * t / 20.0)  # slow exposure drift
    for actor in ACTORS:
        pos = actor.at(t)
        if pos is None:
            continue
        x, feet, h = pos
        moving = actor.at(t + 0.2) != pos
        if moving:
            feet -= 3 * abs(np.sin(np.pi * t * 2.0))  # the bob of a step
        _paste(frame, _cutout(actor.who), x, feet, h, actor.mirror)
    rng = np.random.default_rng(int(t * 1000))
    frame += rng.normal(0.0, noise, frame.shape).astype(np.float32)
    return np.clip(frame, 0, 255).astype(np.uint8)


@functools.cache
def clip_jpegs(seconds: float = SECONDS, fps: float = FPS, quality: int = 80) -> tuple[bytes, ...]:
    """The clip as JPEG frames (cached per process: the same bytes for every camera and run)."""
    import cv2

    n = round(seconds * fps)
    return tuple(
        cv2.imencode(".jpg", frame_at(i / fps), [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes() for i in range(n)
    )


def write_video(path: Path, seconds: float = SECONDS, fps: float = FPS) -> Path:
    """The clip as an MJPEG AVI (to look at it, or feed it to an edge's file camera)."""
    import cv2

    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (WIDTH, HEIGHT))
    for jpg in clip_jpegs(seconds, fps):
        out.write(cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR))
    out.release()
    return path
