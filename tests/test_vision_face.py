"""Faces on real images: mediapipe/YuNet detection on person crops, insightface alignment, FaceNet embeddings.

The packages ship one photo per person, so "other images of a person" are augmented copies of that
photo (mirror, light, scale, rotation, blur, JPEG damage, reframing): an honest but easier test than
new photos would be. The threshold calibration below prints its numbers (run with ``-s``).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import images
import numpy as np
import pytest

from sensorium.nodes.face import FaceOptions, FaceStage, _centrality
from sensorium.pipeline.messages import Box, Detections, FaceRecognized, Message, VideoFrame
from sensorium.pipeline.stage import StageContext

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def detector():  # type: ignore[no-untyped-def]
    from sensorium.models.detector import PersonDetector

    # Every box the model proposes, parts and doubles included (contain=0): these tests are about the faces in
    # the boxes — t1.jpg's six faces need the boxes the person count merges (counting: test_vision_regions).
    return PersonDetector(contain=0.0)


@pytest.fixture(scope="module")
def faces():  # type: ignore[no-untyped-def]
    from sensorium.models.faces import FacePipeline

    p = FacePipeline(recognizer="facenet")
    yield p
    p.close()


async def make_stage(tmp_path: Path, **opts: object) -> tuple[FaceStage, list[Message]]:
    out: list[Message] = []

    async def emit(msg: Message) -> None:
        out.append(msg)

    ctx = StageContext(
        name="face", worker="test", options=FaceOptions(recognizer="facenet", **opts), data_dir=tmp_path, emit=emit
    )
    stage = FaceStage(ctx)
    await stage.start()
    return stage, out


class Feeder:
    """Runs real frames through the detector (with tracking) into a face stage, like the pipeline does."""

    def __init__(self, detector, stage: FaceStage, out: list[Message]) -> None:  # type: ignore[no-untyped-def]
        self.detector, self.stage, self.out, self.seq = detector, stage, out, 0

    async def frame(self, img: np.ndarray, camera: str = "cam1") -> list[FaceRecognized]:
        self.seq += 1
        n = len(self.out)
        data = images.jpeg(img, 92)
        boxes = self.detector.track([img], [f"hall/{camera}"])[0]
        await self.stage.handle(VideoFrame(seq=self.seq, time=float(self.seq), room="hall", source=camera, data=data))
        det = Detections(
            seq=self.seq,
            time=float(self.seq),
            room="hall",
            camera=camera,
            persons=len(boxes),
            boxes=[Box(b.x1, b.y1, b.x2, b.y2, b.score, b.track) for b in boxes],
            frame_seq=self.seq,
        )
        await self.stage.handle(det)
        return [m for m in self.out[n:] if isinstance(m, FaceRecognized)]


async def test_zidane_has_two_faces(detector, faces, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stage, out = await make_stage(tmp_path)
    got = await Feeder(detector, stage, out).frame(images.load(images.ZIDANE), camera="zidane")
    assert len(got) == 2 and len({f.track for f in got}) == 2
    assert all(f.person == "unknown" for f in got)  # nobody is enrolled
    await stage.stop()


def test_embeddings_are_unit_norm_with_model_id(faces) -> None:  # type: ignore[no-untyped-def]
    assert images.ASTRONAUT is not None
    emb, model_id = faces.embed_image_file(images.ASTRONAUT)
    assert model_id == "facenet-vggface2-512" and emb.shape == (512,)
    assert abs(float(np.linalg.norm(emb)) - 1.0) < 1e-5


def test_enrol_image_without_face_is_a_clear_error(faces, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import cv2

    empty = tmp_path / "room.jpg"
    cv2.imwrite(str(empty), images.empty_room())
    with pytest.raises(ValueError, match="no face found"):
        faces.embed_image_file(empty)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        faces.embed_image_file(junk)


async def test_enrolled_person_recognized_in_other_images_strangers_unknown(detector, faces, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from sensorium.models.gallery import Gallery

    # Enrol one person of the t1 group photo (from a crop of that photo) and the astronaut.
    t1 = images.load(images.T1)
    boxes = detector.detect([t1])[0]
    leftmost = min(boxes, key=lambda b: b.x1)
    crop = t1[: int(leftmost.y2), : int(leftmost.x2)]
    crop_path = tmp_path / "t1-left.jpg"
    import cv2

    cv2.imwrite(str(crop_path), crop)
    g = Gallery(tmp_path / "gallery.db")
    for name, path in (("lefty", crop_path), ("eileen", images.ASTRONAUT)):
        emb, model_id = faces.embed_image_file(path)
        g.add(name, "face", model_id, emb)
    g.close()

    stage, out = await make_stage(tmp_path)
    feed = Feeder(detector, stage, out)
    for kind in ("mirror", "bright", "half", "rotate", "jpeg"):
        got = await feed.frame(images.augment(t1, kind), camera=f"t1-{kind}")
        names = sorted(f.person for f in got)
        assert names.count("lefty") == 1, (kind, names)  # the enrolled person, once
        assert names.count("unknown") >= 4, (kind, names)  # the other people of t1 are strangers
        assert "eileen" not in names
    for kind in ("dark", "blur", "reframe"):
        got = await feed.frame(images.augment(images.load(images.ASTRONAUT), kind), camera=f"astro-{kind}")
        assert [f.person for f in got] == ["eileen"], kind
    await stage.stop()


async def test_recognized_once_per_track_and_again_on_a_clearly_better_face(detector, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import cv2

    stage, out = await make_stage(tmp_path, recheck_s=0.0)
    feed = Feeder(detector, stage, out)
    astro = images.load(images.ASTRONAUT)
    room = images.empty_room()
    events: list[list[FaceRecognized]] = []
    # She walks towards the camera (face grows ×1.12 a frame), then stands still.
    for i in range(10):
        s = 0.45 * 1.12 ** min(i, 6)
        small = cv2.resize(astro, (int(512 * s), int(512 * s)))
        frame = room.copy()
        frame[480 - small.shape[0] :, 320 - small.shape[1] // 2 : 320 - small.shape[1] // 2 + small.shape[1]] = small
        events.append(await feed.frame(frame, camera="walk"))
    flat = [e for ev in events for e in ev]
    assert len({e.track for e in flat}) == 1  # one person, one track
    assert 2 <= len(flat) <= 5, [len(e) for e in events]  # first sight + clearly better faces only
    assert events[0], "recognized on first sight"
    assert not any(events[7:]), "no new recognition while the face does not get better"
    assert stage.looks >= 10 and stage.recognitions == len(flat)
    await stage.stop()


def _faces_in(img: np.ndarray, boxes, faces) -> list[tuple[float, float, np.ndarray]]:  # type: ignore[no-untyped-def]
    """(centre x, centre y, embedding) of each person's face, found the way the face stage finds them."""
    out = []
    for b in boxes:
        x1, y1 = int(max(0, b.x1)), int(max(0, b.y1))
        crop = img[y1 : int(b.y2), x1 : int(b.x2)]
        box = Box(b.x1, b.y1, b.x2, b.y2, b.score)
        best = max(
            faces.detect(crop),
            key=lambda f: _centrality((f.box[0] + x1, f.box[1] + y1, f.box[2] + x1, f.box[3] + y1), f.score, box),
            default=None,
        )
        if best is None:
            continue
        cx, cy = (best.box[0] + best.box[2]) / 2 + x1, (best.box[1] + best.box[3]) / 2 + y1
        if any(abs(cx - o[0]) < 8 and abs(cy - o[1]) < 8 for o in out):
            continue  # the same face seen from two overlapping person boxes
        out.append((cx, cy, faces.embed(crop, [best])[0]))
    return out


def test_threshold_calibration(detector, faces) -> None:  # type: ignore[no-untyped-def]
    """Same person (original vs augmented copy) vs different people, over every bundled face."""
    genuine, impostor = [], []
    all_refs = []
    for path in (images.T1, images.ZIDANE, images.ASTRONAUT, images.BUS):
        base = images.load(path)
        copies = [images.augment(base, kind) for kind in images.AUGMENTATIONS]
        boxes = detector.detect([base, *copies])  # one batch per photo keeps this test fast
        refs = _faces_in(base, boxes[0], faces)
        all_refs += [r[2] for r in refs]
        for kind, img, bx in zip(images.AUGMENTATIONS, copies, boxes[1:], strict=True):
            for x, y, emb in _faces_in(img, bx, faces):
                ox, oy = images.unaugment_point(kind, x, y, base.shape)
                d = [np.hypot(ox - rx, oy - ry) for rx, ry, _ in refs]
                j = int(np.argmin(d))
                if d[j] > 25:
                    continue  # a face the original's pass did not find: no label
                for k, (_, _, ref) in enumerate(refs):
                    (genuine if k == j else impostor).append(float(ref @ emb))
    # Different people across photos too.
    impostor += [float(a @ b) for a, b in itertools.combinations(all_refs, 2)]
    g, i = np.array(genuine), np.array(impostor)
    thr = faces.default_threshold
    stats = {
        "faces_enrolled": len(all_refs),
        "genuine_pairs": len(g),
        "impostor_pairs": len(i),
        "genuine_min": round(float(g.min()), 3),
        "genuine_p5": round(float(np.percentile(g, 5)), 3),
        "genuine_mean": round(float(g.mean()), 3),
        "impostor_max": round(float(i.max()), 3),
        "impostor_p99": round(float(np.percentile(i, 99)), 3),
        "impostor_mean": round(float(i.mean()), 3),
        "threshold": thr,
        "false_reject_rate": round(float((g < thr).mean()), 3),
        "false_accept_rate": round(float((i >= thr).mean()), 4),
    }
    print("face calibration:", json.dumps(stats))
    assert stats["faces_enrolled"] >= 10
    assert stats["false_accept_rate"] == 0.0  # no stranger is ever named at the default threshold
    assert stats["false_reject_rate"] <= 0.1


def _toy_arcface(folder: Path) -> Path:
    """A tiny random-weight ONNX with ArcFace's interface (1×3×112×112 → 512) in buffalo_l's layout.

    No ArcFace weights install offline; this checks OUR production loading path (insightface's
    ``model_zoo.get_model`` routing, its preprocessing, our unit norm and model id), not accuracy.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 8, 8)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((1568, 512)) * 0.05).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["data", "w1"], ["c1"], strides=[8, 8]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Flatten", ["r1"], ["f1"]),
        helper.make_node("MatMul", ["f1", "w2"], ["fc1"]),
    ]
    graph = helper.make_graph(
        nodes,
        "toy_arcface",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["None", 512])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "w600k_r50.onnx"))
    return folder


def test_arcface_directory_loads_through_insightface(tmp_path: Path) -> None:
    from sensorium.models.faces import FacePipeline

    pipe = FacePipeline(recognizer=str(_toy_arcface(tmp_path / "buffalo_l")))
    try:
        assert pipe.family == "arcface" and pipe.model_id == "arcface-w600k_r50"
        emb, model_id = pipe.embed_image_file(images.ASTRONAUT or "")
        assert model_id == "arcface-w600k_r50" and emb.shape == (512,)
        assert abs(float(np.linalg.norm(emb)) - 1.0) < 1e-5
    finally:
        pipe.close()
    with pytest.raises(FileNotFoundError, match="ArcFace model not found"):
        FacePipeline(recognizer=str(tmp_path / "nowhere"))


async def test_corrupt_frame_is_rejected_and_the_stage_keeps_serving(detector, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from sensorium.pipeline.messages import InputError

    stage, out = await make_stage(tmp_path)
    good = images.jpeg(images.load(images.ZIDANE))
    boxes = [
        Box(b.x1, b.y1, b.x2, b.y2, b.score, i + 1)
        for i, b in enumerate(detector.detect([images.load(images.ZIDANE)])[0])
    ]
    await stage.handle(VideoFrame(seq=1, time=1.0, room="hall", source="cam", data=good[:200] + b"\0" * 500))
    await stage.handle(Detections(time=1.0, room="hall", camera="cam", persons=2, boxes=boxes, frame_seq=1))
    errors = [m for m in out if isinstance(m, InputError)]
    assert len(errors) == 1 and "corrupt" in errors[0].reason
    await stage.handle(VideoFrame(seq=2, time=2.0, room="hall", source="cam", data=good))
    await stage.handle(Detections(time=2.0, room="hall", camera="cam", persons=2, boxes=boxes, frame_seq=2))
    assert len([m for m in out if isinstance(m, FaceRecognized)]) == 2
    await stage.stop()


async def test_gate_looks_at_a_faceless_track_again_only_when_it_comes_closer(detector, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import cv2

    astro = images.load(images.ASTRONAUT).copy()
    astro[20:200, 140:310] = (128, 128, 128)  # her face covered: a person the face detector finds no face on
    room = images.empty_room()

    def scene(scale: float, dx: int) -> np.ndarray:
        small = cv2.resize(astro, (int(512 * scale), int(512 * scale)))
        frame = room.copy()
        x = 320 - small.shape[1] // 2 + dx
        frame[480 - small.shape[0] :, x : x + small.shape[1]] = small
        return frame

    looks: dict[bool, list[int]] = {}
    for gate in (True, False):
        detector.reset()
        stage, out = await make_stage(tmp_path / str(gate), gate=gate, retry_s=1.0)
        now = [0.0]
        stage.now = lambda now=now: now[0]  # type: ignore[method-assign]
        feed = Feeder(detector, stage, out)
        counts = []
        for i in range(12):  # 2.4 s at 5 fps: standing still (a little sway), then two steps closer
            now[0] = i * 0.2
            before = stage.looks
            await feed.frame(scene(0.6 if i < 10 else 0.6 * 1.2 ** (i - 9), 2 * (i % 3)), camera="cam")
            counts.append(stage.looks - before)
        looks[gate] = counts
        assert not [m for m in out if isinstance(m, FaceRecognized)]  # nothing to recognize either way
        await stage.stop()
    assert looks[False][:10] == [1] * 10  # without the gate: every frame
    # with it: the first frame, then once a second while she stands still, and at once when she comes closer
    assert looks[True] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1], looks[True]
