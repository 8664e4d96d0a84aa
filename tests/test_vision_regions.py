"""Detection in motion regions on real frames: the generated walking-people clip, a still room, a still person.

The accuracy guard: on a clip of people walking through a still room, region detection finds at least
95 % of the people that whole-frame detection finds in the same frames, while running the detector on
a fraction of the pixels.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from benchmarks import vision_media as clip
from sensorium.models.detector import PersonDetector, default_cache_dir
from sensorium.models.regions import FrameIn, FrameOut, RegionDetector, Settings
from sensorium.models.yolo import match_boxes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def detector() -> PersonDetector:
    d = PersonDetector(backend="auto", cache_dir=default_cache_dir())
    d.warm_up((640, 320))
    return d


def jpeg(img: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def still_frames(n: int, person: bool) -> list[bytes]:
    """``n`` frames of the still room (sensor noise only), with the man in the coat standing in it or not."""
    out = []
    for i in range(n):
        f = clip.room().astype(np.float32)
        if person:
            clip._paste(f, clip._cutout("coat"), 320, 470, 300, False)
        f += np.random.default_rng(i).normal(0, 2.5, f.shape)
        out.append(jpeg(np.clip(f, 0, 255).astype(np.uint8)))
    return out


def play(rd: RegionDetector, jpegs: list[bytes] | tuple[bytes, ...], t0: float = 100.0, camera: str = "c") -> list:
    return [rd.process([FrameIn(camera, data, t0 + i / clip.FPS, 640, 480)])[0] for i, data in enumerate(jpegs)]


def test_regions_find_what_whole_frames_find_on_the_walking_clip(detector: PersonDetector) -> None:
    jpegs = clip.clip_jpegs()
    full = play(RegionDetector(detector, Settings(motion=False)), jpegs)
    detector.reset()
    regions = play(RegionDetector(detector, Settings(motion=True)), jpegs)

    # The people whole frames count (boxes of confirmed tracks seen in that frame; not a held box, nor a box no
    # track took), each found by regions too.
    def counted(f: FrameOut) -> list[tuple[float, ...]]:
        return [b.xyxy for b in f.boxes if b.track >= 0 and b.score > 0]

    found = sum(
        len(match_boxes([b.xyxy for b in r.boxes], counted(f), 0.5)) for r, f in zip(regions, full, strict=True)
    )
    persons = sum(len(counted(f)) for f in full)
    assert persons > 200  # someone is in every frame; most of the time two people
    assert found / persons >= 0.95, f"regions found {found} of the {persons} people whole frames found"
    work = {w: sum(1 for r in regions if r.work == w) for w in ("none", "regions", "full")}
    # whole frames for the first frame and the keep-alive passes (every 5 s of a 30 s clip), and where the regions
    # would cover most of the frame (two people far apart, one of them walking)
    assert sum(1 for r in regions if r.work == "full" and r.why != "regions cover it") <= 8, work
    pixels = sum(
        sum((g[2] - g[0]) * (g[3] - g[1]) for g in r.regions) * (4 if r.work == "full" else 1) for r in regions
    )
    # a whole frame costs a 640 px input; a region a 320 px one, a quarter of it
    assert pixels < 0.6 * len(regions) * 4 * 640 * 480, "regions should cost well under whole frames"


def test_still_room_costs_a_grayscale_decode(detector: PersonDetector) -> None:
    out = play(RegionDetector(detector), still_frames(20, person=False))
    assert out[0].work == "full" and out[0].why == "first"
    assert [o.work for o in out[1:]] == ["none"] * 19  # nothing moved, no track to check: no detector run
    assert all(not o.boxes for o in out)


def test_still_person_keeps_one_track_is_rechecked_and_kept_alive(detector: PersonDetector) -> None:
    detector.reset()
    rd = RegionDetector(detector, Settings(recheck_s=1.0, keepalive_s=5.0))
    out = play(rd, still_frames(30, person=True))  # 6 s at 5 fps
    assert out[0].work == "full"
    # Found on the first frame, counted once found again on the next (a one-frame box never counts).
    assert out[0].people == 0 and len(out[0].boxes) == 1 and out[0].boxes[0].track == -1
    # Then one person, one track id in every frame, also where nothing was detected. (A re-check may see a
    # weak second box around him: it is not counted.)
    ids = [[b.track for b in o.boxes if b.track >= 0] for o in out[1:]]
    assert all(len(i) == 1 for i in ids), ids
    assert len({i[0] for i in ids}) == 1 and ids[0][0] >= 1
    assert all(o.people == 1 for o in out[1:])
    checks = [i for i, o in enumerate(out) if o.work == "regions"]
    fulls = [i for i, o in enumerate(out) if o.work == "full"]
    assert fulls == [0, 25]  # first frame, then the keep-alive pass 5 s later
    # The confirming look, then one look a second after it, one region each (and a second look if it cut someone)
    assert checks == [1, 6, 11, 16, 21]
    assert all(out[i].crops - out[i].retries == 1 for i in checks)
    assert sum(1 for o in out if o.work == "none") >= 20


def test_keepalive_finds_a_person_motion_missed(detector: PersonDetector) -> None:
    detector.reset()
    # A threshold no change reaches: motion never fires, as for someone who came in very slowly.
    rd = RegionDetector(detector, Settings(threshold=255, keepalive_s=2.0))
    frames = still_frames(4, person=False) + still_frames(12, person=True)
    out = play(rd, frames)
    assert all(not o.boxes for o in out[:10]), "frames before the keep-alive pass have not seen him"
    assert out[10].work == "full" and out[10].why == "keep-alive" and out[10].boxes
    assert out[11].work == "regions"  # a new box is looked at again, so the tracker can confirm it
    ids = [[b.track for b in o.boxes if b.track >= 0] for o in out[11:]]
    # ByteTrack confirms weak boxes (0.3-0.4 from the bundled model) only after a few matches; then one id, carried
    confirmed = next(k for k, i in enumerate(ids) if i)
    assert confirmed <= 3 and all(i == ids[confirmed] and len(i) == 1 for i in ids[confirmed:]), ids
    assert any(o.work == "none" for o in out[11 + confirmed :])


def test_a_camera_clock_going_back_starts_the_camera_over(detector: PersonDetector) -> None:
    detector.reset()
    rd = RegionDetector(detector)
    frames = still_frames(3, person=True)
    play(rd, frames, t0=500.0)
    again = play(rd, frames, t0=100.0)  # a replay of the same camera from an earlier time
    assert again[0].work == "full" and again[0].why == "first" and len(again[0].boxes) == 1


async def test_detect_stage_counts_its_work_and_keeps_ids(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sensorium.nodes.detect import DetectOptions, DetectStage
    from sensorium.pipeline.messages import Detections, Message, VideoFrame
    from sensorium.pipeline.stage import StageContext

    out: list[Message] = []

    async def emit(msg: Message) -> None:
        out.append(msg)

    opts = DetectOptions(cache_dir=str(default_cache_dir()))
    stage = DetectStage(StageContext(name="detect", worker="w", options=opts, data_dir=tmp_path, emit=emit))
    await stage.start()
    for i, data in enumerate(still_frames(10, person=True)):
        await stage.handle(VideoFrame(seq=i + 1, time=10.0 + i / 5, room="hall", source="cam", data=data))
    dets = [m for m in out if isinstance(m, Detections)]
    # The first frame's box is not counted yet (track -1); from the second frame on, one person, one id.
    assert len(dets) == 10 and dets[0].persons == 0 and [b.track for b in dets[0].boxes] == [-1]
    assert all(d.persons == 1 for d in dets[1:]), [d.persons for d in dets]
    assert len({b.track for d in dets[1:] for b in d.boxes}) == 1
    assert stage.work["full"] == 1 and stage.work["none"] >= 7
    await stage.stop()
