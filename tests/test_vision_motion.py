"""Motion detection and region planning: real frames of a still room, a person pasted in, regions' geometry."""

from __future__ import annotations

import images
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorium.models.motion import (
    MotionDetector,
    area,
    intersection,
    plan_regions,
    square_around,
    touches_inner_edge,
)


def gray(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def noisy(img: np.ndarray, seed: int, sigma: float = 3.0) -> np.ndarray:
    """A camera's sensor noise on a still frame."""
    rng = np.random.default_rng(seed)
    return np.clip(img.astype(np.float32) + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def test_still_noisy_room_has_no_motion_and_a_person_walking_in_does() -> None:
    import cv2

    room = images.empty_room()
    md = MotionDetector()
    first = md.update(gray(noisy(room, 0)), room.shape[:2])
    assert first.first and not first.boxes
    for k in range(1, 6):
        m = md.update(gray(noisy(room, k)), room.shape[:2])
        assert not m.boxes and m.fraction < 0.01, f"noise on a still room is not motion (frame {k}: {m})"
    person = images.load(images.ZIDANE)[0:720, 700:1280]  # Zidane, cut out of the photo
    frame = room.copy()
    frame[200:440, 300:494] = cv2.resize(person, (194, 240))
    m = md.update(gray(noisy(frame, 9)), room.shape[:2])
    assert m.boxes and not m.first and not m.global_change
    x1 = min(b[0] for b in m.boxes)
    y1 = min(b[1] for b in m.boxes)
    x2 = max(b[2] for b in m.boxes)
    y2 = max(b[3] for b in m.boxes)
    # the moving area is where the person appeared, in frame pixels (within the 4 px of a 160 px motion frame)
    assert abs(x1 - 300) <= 12 and abs(y1 - 200) <= 12 and abs(x2 - 494) <= 12 and abs(y2 - 440) <= 12


def test_lights_on_is_a_global_change_and_the_background_restarts() -> None:
    room = images.empty_room()
    md = MotionDetector()
    md.update(gray(room), room.shape[:2])
    bright = np.clip(room.astype(np.int16) + 80, 0, 255).astype(np.uint8)
    m = md.update(gray(bright), room.shape[:2])
    assert m.global_change and not m.boxes
    assert not md.update(gray(bright), room.shape[:2]).boxes  # the new light is the background now


def test_regions_cover_the_motion_and_grow_to_the_track_it_touches() -> None:
    arm = (300, 200, 340, 240)  # only an arm moved
    person = (250, 100, 380, 470)  # the track it belongs to
    regions = plan_regions([arm], [person], 640, 480, 320)
    assert len(regions) == 1
    r = regions[0]
    assert r[0] <= person[0] and r[1] <= person[1] and r[2] >= person[2] and r[3] >= person[3]
    assert plan_regions([], [person], 640, 480, 320) == []  # nothing moved: nothing to look at
    # motion all over the frame: one full-frame pass is cheaper than the crops
    spread = [(0, 0, 100, 100), (540, 0, 640, 100), (0, 380, 100, 480), (540, 380, 640, 480)]
    assert plan_regions(spread, [], 640, 480, 320) == [(0, 0, 640, 480)]


def test_cut_detection_is_seen_at_inner_edges_only() -> None:
    region = (100, 0, 420, 320)
    assert touches_inner_edge((101, 50, 200, 300), region, 640, 480)  # cut on the left
    assert not touches_inner_edge((150, 0, 250, 200), region, 640, 480)  # top is the frame's own edge
    assert touches_inner_edge((150, 10, 250, 319), region, 640, 480)  # cut at the bottom


boxes = st.builds(
    lambda x, y, w, h: (x, y, min(640, x + w), min(480, y + h)),
    st.integers(0, 630),
    st.integers(0, 470),
    st.integers(4, 400),
    st.integers(4, 400),
)


@settings(max_examples=200, deadline=None)
@given(motion=st.lists(boxes, max_size=6), tracks=st.lists(boxes, max_size=3), size=st.sampled_from([256, 320, 416]))
def test_regions_are_inside_the_frame_and_cover_every_moving_area(
    motion: list[tuple[int, int, int, int]], tracks: list[tuple[int, int, int, int]], size: int
) -> None:
    regions = plan_regions(motion, tracks, 640, 480, size)
    assert bool(regions) == bool(motion)
    for r in regions:
        assert 0 <= r[0] < r[2] <= 640 and 0 <= r[1] < r[3] <= 480
        # at least the detector's input size (or the whole frame's side where the frame is smaller)
        assert r[2] - r[0] >= min(size, 640) and r[3] - r[1] >= min(size, 480)
    for m in motion:
        # every moving pixel is inside some region
        assert any(intersection(m, r) == area(m) for r in regions), (m, regions)


@settings(max_examples=200, deadline=None)
@given(box=boxes, size=st.sampled_from([256, 320]))
def test_square_around_holds_the_box_when_it_fits(box: tuple[int, int, int, int], size: int) -> None:
    r = square_around(box, size, 640, 480)
    assert 0 <= r[0] < r[2] <= 640 and 0 <= r[1] < r[3] <= 480
    if 1.25 * max(box[2] - box[0], box[3] - box[1]) <= 480:
        assert r[0] <= box[0] and r[1] <= box[1] and r[2] >= box[2] and r[3] >= box[3]
