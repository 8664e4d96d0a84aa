"""Person tracks: a camera's tracker holds no state for people long gone, and gives the same ids as before."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from sensorium.models.detector import RemovedTrack, forget_removed_tracks


def _tracker():
    from ultralytics.trackers.track import TRACKER_MAP
    from ultralytics.utils import YAML, IterableSimpleNamespace
    from ultralytics.utils.checks import check_yaml

    cfg = IterableSimpleNamespace(**YAML.load(check_yaml("bytetrack.yaml")))
    return TRACKER_MAP[cfg.tracker_type](args=cfg)


def _visits(n: int) -> list[np.ndarray]:
    """Frames of people walking across one by one (a new person every 20 frames), with empty frames between."""
    rng = np.random.default_rng(7)
    frames = []
    for _ in range(n):
        x0, y0 = rng.uniform(20, 300), rng.uniform(20, 150)
        for k in range(12):
            x = x0 + 6 * k
            frames.append(np.array([[x, y0, x + 80, y0 + 200, 0.9, 0.0]], np.float32))
        frames += [np.zeros((0, 6), np.float32)] * 8
    return frames


def _run(frames: list[np.ndarray], reduce: bool) -> tuple[list[list[int]], object]:
    from ultralytics.engine.results import Boxes

    tracker = _tracker()
    ids = []
    for data in frames:
        ids.append([int(r[4]) for r in tracker.update(Boxes(data, (480, 640)), None)])
        if reduce:
            forget_removed_tracks(tracker)
    return ids, tracker


@pytest.mark.slow
def test_removed_tracks_keep_only_their_ids_and_tracking_is_unchanged() -> None:
    frames = _visits(150)
    plain_ids, plain = _run(frames, reduce=False)
    ids, tracker = _run(frames, reduce=True)
    assert ids == plain_ids  # the same people get the same track ids, frame by frame
    assert len({i for f in ids for i in f}) >= 100  # visitors were tracked (a few pick up a lost track)
    assert len(tracker.removed_stracks) == len(plain.removed_stracks) > 100
    assert all(isinstance(t, RemovedTrack) for t in tracker.removed_stracks)


@pytest.mark.slow
def test_a_camera_tracker_does_not_grow_with_visitors() -> None:
    frames = _visits(200)
    from ultralytics.engine.results import Boxes

    tracker = _tracker()
    for data in frames[:400]:  # 20 visitors: warm
        tracker.update(Boxes(data, (480, 640)), None)
        forget_removed_tracks(tracker)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for data in frames[400:]:  # 180 more visitors come and go
            tracker.update(Boxes(data, (480, 640)), None)
            forget_removed_tracks(tracker)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 48 * 1024, f"the tracker kept {grown / 1024:.0f} KiB for 180 visitors gone"


def test_a_box_inside_a_better_one_goes_people_side_by_side_stay() -> None:
    from sensorium.models.yolo import postprocess, suppress_contained

    body = (100, 50, 200, 350)
    part = (110, 60, 190, 200)  # head and shoulders of the same person: IoU 0.37, 100 % inside
    other = (210, 50, 310, 350)  # the person beside them
    boxes = np.array([part, body, other], np.float32)
    scores = np.array([0.35, 0.6, 0.5], np.float32)
    assert list(suppress_contained(boxes, scores, 0.9)) == [1, 2]
    assert list(suppress_contained(boxes, scores, 0.0)) == [1, 2, 0]  # off: every box, best first
    # A better-scored part inside a weaker body box: one box, the body's (the whole person, as on other frames).
    assert list(suppress_contained(boxes[:2], np.array([0.6, 0.35], np.float32), 0.9)) == [1]
    # Through the post-processing, across the model's two person classes (Normal, Fall): one box.
    raw = np.zeros((1, 6, 3), np.float32)
    for k, ((x1, y1, x2, y2), normal, fall) in enumerate([(body, 0.6, 0.1), (part, 0.1, 0.35), (other, 0.5, 0.0)]):
        raw[0, :, k] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, normal, fall]
    found = postprocess(raw, [0, 1], 0.25, contain=0.9)[0]
    assert len(found) == 2 and sorted(found[:, 4].tolist()) == pytest.approx([0.5, 0.6])
    assert len(postprocess(raw, [0, 1], 0.25)[0]) == 3  # IoU-based NMS alone keeps the part
