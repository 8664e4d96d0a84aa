"""Real test images shipped inside installed packages, augmentations, and generated frame folders.

There is no second photo of any person in the packages, so "other images of the same person" are
augmented copies (mirror, light, scale, rotation, blur, JPEG damage, different framing) of one photo.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np


def _pkg_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    return path if path.exists() else None


BUS = _pkg_file("ultralytics", "assets", "bus.jpg")
"""ultralytics' bus.jpg: 4 people in front of a bus."""
ZIDANE = _pkg_file("ultralytics", "assets", "zidane.jpg")
"""ultralytics' zidane.jpg: 2 people, 2 faces."""
T1 = _pkg_file("insightface", "data", "images", "t1.jpg")
"""insightface's t1.jpg: a group photo with 6 faces."""
TOM_HANKS = _pkg_file("insightface", "data", "images", "Tom_Hanks_54745.png")
"""insightface's 112×112 aligned face of Tom Hanks."""
ASTRONAUT = _pkg_file("skimage", "data", "astronaut.png")
"""scikit-image's astronaut.png (Eileen Collins), None without scikit-image."""

AUGMENTATIONS = ("mirror", "bright", "dark", "half", "rotate", "blur", "jpeg", "reframe")
"""Ways of making a different-looking copy of a photo (see ``augment``)."""


def load(path: Path | None) -> np.ndarray:
    """A BGR image from a package path (skips the test if the package is missing)."""
    import cv2
    import pytest

    if path is None:
        pytest.skip("test image's package is not installed")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"could not read {path}"
    return img


def augment(img: np.ndarray, kind: str) -> np.ndarray:
    """A changed copy of ``img``: one of ``AUGMENTATIONS``."""
    import cv2

    h, w = img.shape[:2]
    if kind == "mirror":
        return cv2.flip(img, 1)
    if kind == "bright":
        return cv2.convertScaleAbs(img, alpha=1.25, beta=25)
    if kind == "dark":
        return cv2.convertScaleAbs(img, alpha=0.6, beta=-10)
    if kind == "half":
        return cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    if kind == "rotate":
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 10, 1.0)
        return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    if kind == "blur":
        return cv2.GaussianBlur(img, (5, 5), 0)
    if kind == "jpeg":
        return cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 25])[1], cv2.IMREAD_COLOR)
    if kind == "reframe":
        y0, x0 = h // 10, w // 12
        crop = img[y0:, x0 : w - x0 // 2]
        return cv2.resize(crop, (int(crop.shape[1] * 1.3), int(crop.shape[0] * 1.3)))
    raise ValueError(f"unknown augmentation {kind!r}")


def jpeg(img: np.ndarray, quality: int = 85) -> bytes:
    """JPEG bytes of a BGR image."""
    import cv2

    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def letterbox(img: np.ndarray, width: int = 640, height: int = 480, background: np.ndarray | None = None) -> np.ndarray:
    """``img`` scaled to fit a ``width``×``height`` frame, centred on ``background`` (grey if None)."""
    import cv2

    frame = (
        np.full((height, width, 3), 120, np.uint8)
        if background is None
        else cv2.resize(background, (width, height), interpolation=cv2.INTER_AREA)
    )
    s = min(width / img.shape[1], height / img.shape[0])
    small = cv2.resize(img, (int(img.shape[1] * s), int(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
    y, x = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    frame[y : y + small.shape[0], x : x + small.shape[1]] = small
    return frame


def empty_room(width: int = 640, height: int = 480) -> np.ndarray:
    """A frame with nobody in it: scikit-image's brick wall if available, else textured grey.

    (Not the coffee cup: the bundled person model sees a 0.28 "person" in it.)
    """
    import cv2

    path = _pkg_file("skimage", "data", "brick.png")
    if path is not None:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    return cv2.GaussianBlur(rng.integers(60, 180, (height, width, 3), dtype=np.uint8), (9, 9), 0)


def visit_frames(person: np.ndarray, before: int, during: int, after: int) -> list[np.ndarray]:
    """Frames of a room: ``before`` empty, ``during`` with ``person`` (drifting a little), ``after`` empty."""
    import cv2

    room = empty_room()
    frames = [room.copy() for _ in range(before)]
    base = letterbox(person, background=room)
    for i in range(during):
        m = np.float32([[1, 0, 2 * (i % 5)], [0, 1, 0]])  # a small move per frame, as a person stands and shifts
        frames.append(cv2.warpAffine(base, m, (base.shape[1], base.shape[0]), borderMode=cv2.BORDER_REPLICATE))
    frames += [room.copy() for _ in range(after)]
    return frames


def write_frames(folder: Path, frames: list[np.ndarray]) -> list[Path]:
    """Write frames as numbered JPEGs (the edge's folder source reads them in name order)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, f in enumerate(frames):
        p = folder / f"frame_{i:05d}.jpg"
        cv2.imwrite(str(p), f, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(p)
    return paths


def unaugment_point(kind: str, x: float, y: float, shape: tuple[int, ...]) -> tuple[float, float]:
    """Where a point of ``augment(img, kind)`` was in ``img`` (of shape ``shape``): to label faces."""
    import cv2

    h, w = shape[:2]
    if kind == "mirror":
        return w - 1 - x, y
    if kind == "half":
        return 2 * x, 2 * y
    if kind == "rotate":
        m = cv2.invertAffineTransform(cv2.getRotationMatrix2D((w / 2, h / 2), 10, 1.0))
        return float(m[0, 0] * x + m[0, 1] * y + m[0, 2]), float(m[1, 0] * x + m[1, 1] * y + m[1, 2])
    if kind == "reframe":
        return x / 1.3 + w // 12, y / 1.3 + h // 10
    return x, y
