"""YOLO's pre- and post-processing in numpy, the same for every backend of ``models.backends``.

Ultralytics' letterbox, the score filter and class-agnostic NMS over the person classes, the merge of one
person's boxes, and box matching. The detector (``models.detector``) runs them around each backend's
forward pass; the backends use the pre-processing to calibrate an int8 export on the same inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: ultralytics' defaults: NMS IoU and most boxes per image.
NMS_IOU = 0.7
#: Boxes wider than this × their height are not merged with the boxes inside them (see ``suppress_contained``).
WIDE = 1.2
MAX_DET = 300
PAD_VALUE = 114


def letterbox(
    img: np.ndarray, size: int, rect: bool = False, stride: int = 32
) -> tuple[np.ndarray, float, tuple[float, float]]:
    """``img`` scaled to fit ``size`` and padded (grey 114, centred), as ultralytics' LetterBox does.

    ``rect`` pads only up to a multiple of ``stride`` (dynamic backends); otherwise to ``size``×``size``.
    Returns (image, scale, (left pad, top pad)).
    """
    import cv2

    h, w = img.shape[:2]
    r = min(size / h, size / w)
    nw, nh = round(w * r), round(h * r)
    dw, dh = size - nw, size - nh
    if rect:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    if (w, h) != (nw, nh):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    if top or bottom or left or right:
        img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return img, r, (left, top)


def to_tensor(images: list[np.ndarray]) -> np.ndarray:
    """Letterboxed BGR images (same shape) → RGB float32 0–1, N×3×H×W."""
    batch = np.stack(images)[..., ::-1].transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.float32) / 255.0


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        ix = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        iy = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = ix * iy
        union = areas[i] + areas[rest] - inter
        order = rest[inter <= iou * np.maximum(union, 1e-9)]
    return np.asarray(keep, dtype=np.int64)


def suppress_contained(boxes: np.ndarray, scores: np.ndarray, ratio: float) -> np.ndarray:
    """Indices (best score first) of the boxes kept when boxes of one person are merged: a box mostly inside
    a better one (intersection >= ``ratio`` × its area) goes; a weaker box that holds a better one (the
    whole person around a part of them) takes that box's place, so the person keeps one box of the same
    extent from frame to frame (their track follows it). A box wider than ``WIDE`` × its height is left
    out of this: that is the model's box over several people side by side (a group at a table), and the
    people inside it are people. ``ratio`` 0 keeps every box."""
    order = np.argsort(-scores, kind="stable")
    if ratio <= 0 or len(order) < 2:
        return order
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    areas = np.maximum(w * h, 1e-9)
    wide = w > WIDE * h
    keep: list[int] = []
    for i in order:
        k = np.asarray([j for j in keep if not wide[j]], dtype=np.int64)
        if k.size and not wide[i]:
            ix = np.clip(np.minimum(boxes[i, 2], boxes[k, 2]) - np.maximum(boxes[i, 0], boxes[k, 0]), 0, None)
            iy = np.clip(np.minimum(boxes[i, 3], boxes[k, 3]) - np.maximum(boxes[i, 1], boxes[k, 1]), 0, None)
            same = np.flatnonzero(ix * iy >= ratio * np.minimum(areas[i], areas[k]))
            if same.size:
                j = keep.index(int(k[same[0]]))
                if areas[i] > areas[keep[j]]:  # the whole person around a better-scored part of them
                    keep[j] = int(i)
                continue
        keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


def postprocess(
    raw: np.ndarray, person_classes: list[int], conf: float, iou: float = NMS_IOU, contain: float = 0.0
) -> list[np.ndarray]:
    """Raw outputs → per image an array of person boxes (x1, y1, x2, y2, score) in input pixels.

    Two output layouts: anchor-style (N, 4 + classes, anchors; YOLOv8/11) — the best class of each anchor
    must be a person class, then class-agnostic NMS (ultralytics with ``classes`` and ``agnostic_nms``) —
    and end-to-end (N, boxes, 6: x1, y1, x2, y2, score, class; YOLOv10/26), already suppressed. Then,
    with ``contain`` > 0, boxes inside (or holding) a better box of any person class go
    (``suppress_contained``): one person, one box.
    """
    out = []
    for pred in raw:
        if pred.ndim == 2 and pred.shape[-1] == 6 and pred.shape[0] != 4 + 2:
            keep = (pred[:, 4] > conf) & np.isin(pred[:, 5].astype(int), person_classes)
            found = pred[keep, :5].astype(np.float32)
            out.append(found[suppress_contained(found[:, :4], found[:, 4], contain)])
            continue
        cls = pred[4:]
        best = cls.argmax(0)
        score = cls[best, np.arange(cls.shape[1])]
        keep = (score > conf) & np.isin(best, person_classes)
        if not keep.any():
            out.append(np.zeros((0, 5), np.float32))
            continue
        cx, cy, w, h = pred[:4, keep]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        s = score[keep]
        idx = nms(boxes, s, iou)[:MAX_DET]
        idx = idx[suppress_contained(boxes[idx], s[idx], contain)]
        out.append(np.concatenate([boxes[idx], s[idx, None]], axis=1).astype(np.float32))
    return out


def with_low(found: np.ndarray, conf: float, contain: float) -> np.ndarray:
    """Boxes (after class-agnostic NMS, best first) → those above ``conf`` merged as ``postprocess`` does,
    then the weaker ones that overlap none of them (IoU <= 0.3, not mostly inside or around one)."""
    high = found[found[:, 4] > conf]
    high = high[suppress_contained(high[:, :4], high[:, 4], contain)]
    weak = [
        b
        for b in found[found[:, 4] <= conf]
        if not any(iou(b, h) > 0.3 or _overlap(b, h) >= max(contain, 0.5) * min(_area(b), _area(h)) for h in high)
    ]
    return np.concatenate([high, np.asarray(weak, np.float32).reshape(-1, 5)])[:MAX_DET].astype(np.float32)


def _area(b: np.ndarray) -> float:
    return float(max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]))


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1])))


def unletterbox(boxes: np.ndarray, scale: float, pad: tuple[float, float], shape: tuple[int, ...]) -> np.ndarray:
    """Boxes in letterboxed input pixels → pixels of the original image (clipped to it)."""
    b = boxes.copy()
    b[:, [0, 2]] = (b[:, [0, 2]] - pad[0]) / scale
    b[:, [1, 3]] = (b[:, [1, 3]] - pad[1]) / scale
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, shape[1])
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, shape[0])
    return b


def iou(a: tuple[float, ...] | np.ndarray, b: tuple[float, ...] | np.ndarray) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def match_boxes(found: list[Any], reference: list[Any], min_iou: float = 0.5) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching by IoU (best pairs first): (found index, reference index, IoU)."""
    pairs = sorted(((iou(f, r), i, j) for i, f in enumerate(found) for j, r in enumerate(reference)), reverse=True)
    used_f: set[int] = set()
    used_r: set[int] = set()
    out = []
    for v, i, j in pairs:
        if v < min_iou:
            break
        if i in used_f or j in used_r:
            continue
        used_f.add(i)
        used_r.add(j)
        out.append((i, j, v))
    return out
