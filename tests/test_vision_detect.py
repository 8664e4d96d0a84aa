"""Person detection and tracking on real images: the bundled YOLOv8s, ultralytics' ByteTrack, the detect stage.

Exports for ONNX Runtime / OpenVINO go to the user cache (``~/.cache/sensorium/detector``), shared by the
test files so each size is exported once per machine.
"""

from __future__ import annotations

import struct

import images
import numpy as np
import pytest

from sensorium.models.detector import default_cache_dir
from sensorium.nodes.detect import DetectOptions, DetectStage, check_frame, jpeg_size
from sensorium.pipeline.messages import Detections, InputError, Message, VideoFrame
from sensorium.pipeline.stage import StageContext

pytestmark = pytest.mark.slow
CACHE = default_cache_dir()


@pytest.fixture(scope="module")
def detector():  # type: ignore[no-untyped-def]
    from sensorium.models.detector import PersonDetector

    return PersonDetector()


def frame(img: np.ndarray, room: str = "hall", camera: str = "cam1", seq: int = 1, t: float = 0.0) -> VideoFrame:
    h, w = img.shape[:2]
    return VideoFrame(seq=seq, time=t, room=room, source=camera, width=w, height=h, data=images.jpeg(img))


async def make_stage(**opts: object) -> tuple[DetectStage, list[Message]]:
    out: list[Message] = []

    async def emit(msg: Message) -> None:
        out.append(msg)

    opts_ = DetectOptions(**({"cache_dir": str(CACHE)} | opts))
    ctx = StageContext(name="detect", worker="test", options=opts_, rooms=("hall", "kitchen"), emit=emit)
    stage = DetectStage(ctx)
    await stage.start()
    return stage, out


def test_bus_has_four_people(detector) -> None:  # type: ignore[no-untyped-def]
    boxes = detector.detect([images.load(images.BUS)])[0]
    assert len(boxes) == 4
    assert all(b.score >= 0.25 and b.y2 > b.y1 for b in boxes)


def test_batched_detection_matches_single_calls(detector) -> None:  # type: ignore[no-untyped-def]
    bus, zidane = images.load(images.BUS), images.load(images.ZIDANE)
    batched = detector.detect([bus, zidane, bus])
    assert [len(b) for b in batched] == [4, 2, 4]
    single = detector.detect([zidane])[0]
    a = sorted((round(b.x1), round(b.y1)) for b in batched[1])
    s = sorted((round(b.x1), round(b.y1)) for b in single)
    assert np.allclose(a, s, atol=8)  # letterboxing in a batch may shift boxes by a few pixels


def test_tracks_are_stable_and_per_camera(detector) -> None:  # type: ignore[no-untyped-def]
    import cv2

    bus, zidane = images.load(images.BUS), images.load(images.ZIDANE)
    detector.reset()
    ids_a, ids_b = [], []
    for i in range(4):
        m = np.float32([[1, 0, 3 * i], [0, 1, 0]])  # people drift a few pixels a frame
        a = cv2.warpAffine(bus, m, (bus.shape[1], bus.shape[0]), borderMode=cv2.BORDER_REPLICATE)
        res = detector.track([a, zidane], ["hall/cam1", "kitchen/cam1"])  # one batch, two cameras
        ids_a.append(sorted(b.track for b in res[0]))
        ids_b.append(sorted(b.track for b in res[1]))
    assert ids_a[0] == ids_a[-1] and len(ids_a[-1]) == 4 and min(ids_a[-1]) >= 1
    assert ids_b[-1] == [1, 2]  # the second camera numbers its own tracks: nothing leaked from the first


def test_tracking_keeps_blas_on_one_thread(detector) -> None:  # type: ignore[no-untyped-def]
    """The tracker's tiny Kalman solves must not wake OpenBLAS's pool, whose threads spin between frames."""
    from threadpoolctl import threadpool_info

    bus = images.load(images.BUS)
    for _ in range(3):
        assert len(detector.track([bus], ["cam-blas"])[0]) == 4
    blas = [i for i in threadpool_info() if i["internal_api"] == "openblas" and "numpy" in i["filepath"]]
    assert blas, "numpy's OpenBLAS not found"
    assert all(i["num_threads"] == 1 for i in blas), blas


async def test_stage_batches_cameras_and_stamps_capture_time() -> None:
    stage, out = await make_stage()
    assert stage.max_batch == 8
    await stage.handle_batch(
        [
            frame(images.load(images.BUS), "hall", "cam1", seq=7, t=1000.5),
            frame(images.load(images.ZIDANE), "kitchen", "cam2", seq=3, t=1000.7),
        ]
    )
    dets = {d.room: d for d in out if isinstance(d, Detections)}
    assert len(dets["hall"].boxes) == 4 and dets["hall"].frame_seq == 7 and dets["hall"].time == 1000.5
    assert len(dets["kitchen"].boxes) == 2 and dets["kitchen"].camera == "cam2" and dets["kitchen"].time == 1000.7
    # A camera's first frame counts nobody yet: a person counts once found again (one-frame boxes never do).
    assert dets["hall"].persons == 0 and all(b.track == -1 for b in dets["hall"].boxes)
    out.clear()
    await stage.handle_batch(
        [
            frame(images.load(images.BUS), "hall", "cam1", seq=8, t=1000.7),
            frame(images.load(images.ZIDANE), "kitchen", "cam2", seq=4, t=1000.9),
        ]
    )
    dets = {d.room: d for d in out if isinstance(d, Detections)}
    # Four counted tracks (a weak extra box the model makes in float32 may come along, not counted: track -1)
    assert dets["hall"].persons == 4 and sum(b.track >= 1 for b in dets["hall"].boxes) == 4
    assert dets["kitchen"].persons == 2 and dets["kitchen"].frame_seq == 4
    await stage.stop()


def _huge_jpeg() -> bytes:
    """A real JPEG whose header claims 30000×30000 pixels (a decompression bomb)."""
    data = bytearray(images.jpeg(np.zeros((16, 16, 3), np.uint8)))
    i = data.index(b"\xff\xc0")
    data[i + 5 : i + 9] = struct.pack(">HH", 30000, 30000)
    return bytes(data)


async def test_bad_frames_are_rejected_and_other_cameras_served() -> None:
    stage, out = await make_stage()
    good = images.jpeg(images.load(images.BUS))
    bad = {
        "corrupt": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40 + b"\xff\xd9",
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "huge": _huge_jpeg(),
        "png": b"\x89PNG\r\n\x1a\n" + b"\0" * 100,
    }
    batch: list[Message] = [VideoFrame(room="hall", source=name, seq=1, data=d) for name, d in bad.items()]
    batch.append(VideoFrame(room="attic", source="cam9", seq=1, data=good))
    batch.append(VideoFrame(room="kitchen", source="cam2", seq=5, time=2.0, data=good))
    await stage.handle_batch(batch)
    errors = {e.input_topic.split("/")[-1]: e.reason for e in out if isinstance(e, InputError)}
    assert set(errors) == {*bad, "cam9"}
    assert "truncated" in errors["truncated"] and "pixel limit" in errors["huge"] and "0 bytes" in errors["empty"]
    assert "room" in errors["cam9"]
    dets = [d for d in out if isinstance(d, Detections)]
    assert len(dets) == 1 and len(dets[0].boxes) == 4 and dets[0].frame_seq == 5
    # And it keeps serving the broken camera once its frames are good again.
    out.clear()
    await stage.handle(VideoFrame(room="hall", source="truncated", seq=2, data=good))
    assert [len(d.boxes) for d in out if isinstance(d, Detections)] == [4]
    await stage.stop()


def test_frame_checks_without_decoding() -> None:
    img = np.zeros((48, 64, 3), np.uint8)
    data = images.jpeg(img)
    assert jpeg_size(data) == (64, 48)
    assert check_frame(VideoFrame(data=data), 10_000, 1 << 20) is None
    assert "pixel limit" in (check_frame(VideoFrame(data=data), 1000, 1 << 20) or "")
    assert "byte limit" in (check_frame(VideoFrame(data=data), 10_000, 100) or "")
    assert jpeg_size(b"\xff\xd8\xff") is None


async def test_degrade_steps() -> None:
    stage, out = await make_stage()
    assert stage.degrade_steps == ("smaller-input", "fewer-checks", "skip-alternate-frames")
    bus = images.load(images.BUS)
    stage.apply_degrade(1)  # whole frames at the region size: still finds people
    assert stage.regions.settings.full_size == 320
    await stage.handle(frame(bus, seq=1, t=1.0))
    assert out and isinstance(out[-1], Detections) and len(out[-1].boxes) >= 3
    stage.apply_degrade(2)  # keep-alive passes and still-track checks four times rarer
    assert stage.regions.settings.keepalive_s == 20.0 and stage.regions.settings.recheck_s == 4.0
    stage.apply_degrade(3)  # and every other frame of a camera is skipped
    out.clear()
    for seq in range(2, 6):
        await stage.handle(frame(bus, seq=seq, t=1.0 + seq / 5))
    assert len([d for d in out if isinstance(d, Detections)]) == 2
    stage.apply_degrade(0)
    assert stage.regions.settings.full_size == 640 and stage.regions.settings.keepalive_s == 5.0
    await stage.stop()


async def test_degrade_without_motion_turns_motion_regions_on() -> None:
    stage, _ = await make_stage(motion=False)
    assert stage.degrade_steps == ("smaller-input", "motion-regions", "skip-alternate-frames")
    assert not stage.regions.settings.motion
    stage.apply_degrade(2)
    assert stage.regions.settings.motion and stage.regions.settings.full_size == 320
    await stage.stop()


def test_weights_by_name_or_path() -> None:
    from sensorium.models.detector import bundled_weights, resolve_weights

    assert resolve_weights("bundled") == str(bundled_weights()) and bundled_weights().exists()
    assert resolve_weights("yolo11n.pt") == "yolo11n.pt"  # production name: ultralytics resolves it
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_weights("/nonexistent/models/mine.pt")


def test_class_map_without_person_is_a_clear_error() -> None:
    from sensorium.models.detector import PersonDetector

    with pytest.raises(ValueError, match=r"no class .* maps to 'person'"):
        PersonDetector(class_map={"dog": "person"})


def test_vision_options_validate_in_the_deployment_file() -> None:
    from sensorium.pipeline.config import ConfigError, from_dict
    from sensorium.registry import available

    opts = {n: c.Options for n, c in available().items()}
    base = {"rooms": {"hall": {}}, "edges": {"pi": {"room": "hall"}}}
    d = from_dict(
        base
        | {
            "stages": {
                "detect": {"weights": "yolo11n.pt", "batch": 4, "budget": "800ms"},
                "presence": {"left_after": "10s"},
            }
        },
        opts,
    )
    assert d.stages["detect"].options.batch == 4 and d.stages["detect"].budget_s == 0.8
    with pytest.raises(ConfigError, match="treshold"):
        from_dict(base | {"stages": {"face": {"treshold": 0.5}}}, opts)
    with pytest.raises(ConfigError, match="left_after"):
        from_dict(base | {"stages": {"presence": {"left_after": "soon"}}}, opts)
    d = from_dict(base | {"stages": {"detect": {"backend": "openvino", "imgsz": 416, "keepalive": "10s"}}}, opts)
    assert d.stages["detect"].options.backend == "openvino" and d.stages["detect"].options.imgsz == 416
    for bad, key in (
        ({"backend": "coreml"}, "backend"),
        ({"precision": "fp8"}, "precision"),
        ({"imgsz": 600}, "imgsz"),
        ({"region_size": 800}, "region_size"),
        ({"keepalive": "often"}, "keepalive"),
        ({"motion_threshold": 0}, "motion_threshold"),
    ):
        with pytest.raises(ConfigError, match=key):
            from_dict(base | {"stages": {"detect": bad}}, opts)
