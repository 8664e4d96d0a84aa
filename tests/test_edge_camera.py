"""Edge cameras on real images (ultralytics' bus.jpg and zidane.jpg): a video file written with
OpenCV's VideoWriter, a folder of images, a live HTTP stream served by ffmpeg; pacing, resizing,
JPEG quality, motion gating, latest-frame-wins, and errors that are reported and retried."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from sensorium.edge.camera import Camera
from sensorium.edge.retry import Backoff
from sensorium.evaluation.ports import free_port
from sensorium.pipeline.clock import Clock
from sensorium.pipeline.config import CameraConfig
from sensorium.pipeline.messages import VideoFrame

try:  # tests/ is a plain folder on sys.path; works too if it becomes a package
    from images import BUS, ZIDANE, load
except ImportError:
    from tests.images import BUS, ZIDANE, load

SIZE = (1280, 720)


@pytest.fixture(scope="module")
def bus() -> np.ndarray:
    return cv2.resize(load(BUS), SIZE)


@pytest.fixture(scope="module")
def zidane() -> np.ndarray:
    return cv2.resize(load(ZIDANE), SIZE)


def write_video(path: Path, segments: list[tuple[np.ndarray, int]], fps: float = 25.0) -> Path:
    """A Motion-JPEG AVI: each (image, n) segment repeats the image n frames."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, SIZE)
    assert w.isOpened()
    for img, n in segments:
        for _ in range(n):
            w.write(img)
    w.release()
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory, bus: np.ndarray, zidane: np.ndarray) -> Path:
    """4 s at 25 fps: bus for 2 s, then zidane for 2 s."""
    return write_video(tmp_path_factory.mktemp("video") / "room.avi", [(bus, 50), (zidane, 50)])


def decode(frame: VideoFrame) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "frame is not a decodable JPEG"
    assert img.shape[1] == frame.width and img.shape[0] == frame.height
    return img


def diff(img: np.ndarray, ref: np.ndarray) -> float:
    """Mean absolute difference after bringing ``ref`` to ``img``'s size."""
    return float(np.mean(cv2.absdiff(img, cv2.resize(ref, (img.shape[1], img.shape[0])))))


def looks_like(img: np.ndarray, bus: np.ndarray, zidane: np.ndarray) -> str:
    return "bus" if diff(img, bus) < diff(img, zidane) else "zidane"


class Recorder:
    """Collects a camera's status reports."""

    def __init__(self) -> None:
        self.items: list[tuple[float, str, str]] = []

    def __call__(self, state: str, detail: str) -> None:
        self.items.append((time.monotonic(), state, detail))

    def states(self) -> list[str]:
        return [s for _, s, _ in self.items]

    def details(self, state: str) -> list[str]:
        return [d for _, s, d in self.items if s == state]


async def collect(cam: Camera, limit: int = 1000, timeout: float = 20.0) -> list[VideoFrame]:
    out: list[VideoFrame] = []

    async def run() -> None:
        async for f in cam.frames():
            out.append(f)
            if len(out) >= limit:
                cam.close()

    await asyncio.wait_for(run(), timeout)
    return out


async def test_video_file_is_paced_resized_and_follows_its_own_timeline(
    video: Path, bus: np.ndarray, zidane: np.ndarray
) -> None:
    clock = Clock()
    cam = Camera("door", CameraConfig(source=str(video), fps=5, width=640, jpeg_quality=80), room="hall", clock=clock)
    t0 = time.monotonic()
    frames = await collect(cam)
    elapsed = time.monotonic() - t0
    # 4 s of 25 fps video sampled at 5 fps: 20 frames in about 4 s, like a camera watching the scene
    assert len(frames) == 20 and cam.finished
    assert 3.4 < elapsed < 5.5
    assert all((f.width, f.height, f.room, f.source, f.encoding) == (640, 360, "hall", "door", "jpeg") for f in frames)
    seen = [looks_like(decode(f), bus, zidane) for f in frames]
    assert seen == ["bus"] * 10 + ["zidane"] * 10
    times = np.array([f.time for f in frames])
    assert np.all(np.diff(times) > 0) and abs(float(np.median(np.diff(times))) - 0.2) < 0.03
    assert abs(times[0] - clock.now() + elapsed) < 0.5  # hub-clock capture times
    assert diff(decode(frames[0]), bus) < 12  # the real picture, not a placeholder


async def test_folder_of_images_at_fps_skips_a_corrupt_image_with_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    shutil.copy(BUS, folder / "00_bus.jpg")
    (folder / "01_broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg " * 50)
    shutil.copy(ZIDANE, folder / "02_zidane.jpg")
    (folder / "notes.txt").write_text("not an image")
    status = Recorder()
    cam = Camera("shelf", CameraConfig(source=str(folder), fps=10, width=640), on_status=status)
    t0 = time.monotonic()
    frames = await collect(cam)
    assert time.monotonic() - t0 < 1.5
    # bus.jpg is 810×1080 (portrait), zidane.jpg 1280×720: both shrink to 640 wide, aspect kept
    assert [(f.width, f.height) for f in frames] == [(640, 853), (640, 360)]
    assert diff(decode(frames[0]), load(BUS)) < 12 and diff(decode(frames[1]), load(ZIDANE)) < 12
    assert status.details("error") == ["camera shelf: cannot decode image 01_broken.jpg; skipped"]


async def test_small_images_are_not_enlarged_and_quality_sets_size(tmp_path: Path) -> None:
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(ZIDANE, folder / "z.jpg")
    sizes, errors = {}, {}
    for q in (30, 95):
        [f] = await collect(Camera("c", CameraConfig(source=str(folder), fps=20, width=1920, jpeg_quality=q)))
        assert (f.width, f.height) == (1280, 720)
        sizes[q], errors[q] = len(f.data), diff(decode(f), load(ZIDANE))
    assert sizes[30] < 0.5 * sizes[95] and errors[30] > errors[95]


async def test_motion_gating_sends_only_frames_that_changed(
    tmp_path: Path, bus: np.ndarray, zidane: np.ndarray
) -> None:
    video = write_video(tmp_path / "short.avi", [(bus, 25), (zidane, 25)])  # 1 s each
    cfg = CameraConfig(source=str(video), fps=10, width=640, motion_threshold=8.0)
    cam = Camera("door", cfg, keepalive_s=60.0)
    frames = await collect(cam)
    assert [looks_like(decode(f), bus, zidane) for f in frames] == ["bus", "zidane"]
    assert (cam.captured, cam.skipped_motion) == (20, 18)
    # with a keep-alive every 0.5 s a static scene still sends about two frames per second
    cam = Camera("door", cfg, keepalive_s=0.5)
    frames = await collect(cam)
    assert 4 <= len(frames) <= 6


async def test_latest_frame_wins_when_the_consumer_is_slow(tmp_path: Path, bus: np.ndarray) -> None:
    clock = Clock()
    path = write_video(tmp_path / "long.avi", [(bus, 100)])
    cam = Camera("door", CameraConfig(source=str(path), fps=10, width=320), clock=clock)
    ages: list[float] = []

    async def slow() -> None:
        async for f in cam.frames():
            if not cam.finished:  # after the file's end the last frame simply stays the newest
                ages.append(clock.now() - f.time)
            await asyncio.sleep(0.6)  # a link or worker that keeps up with < 2 fps

    t0 = time.monotonic()
    await asyncio.wait_for(slow(), 20)
    elapsed = time.monotonic() - t0
    assert 3.5 < elapsed < 6.0
    # ~40 frames captured, ~7 taken; every frame taken was the newest one, never a queued stale one
    assert cam.produced >= 35 and len(ages) <= elapsed / 0.6 + 2
    assert cam.slot.replaced >= cam.produced - len(ages) - 1
    assert max(ages) < 0.25, ages


async def test_corrupt_video_is_reported_retried_and_recovers(tmp_path: Path, bus: np.ndarray) -> None:
    path = tmp_path / "cam.avi"
    # Random bytes: ffmpeg's probing either refuses them or "opens" them and finds no frame (it depends
    # on the bytes); both are a clear error. A fixed seed keeps this run like the last.
    path.write_bytes(np.random.default_rng(11).bytes(200_000))
    status = Recorder()
    cam = Camera("porch", CameraConfig(source=str(path), fps=10), on_status=status, backoff=Backoff(0.05, 0.2))
    task = asyncio.create_task(collect(cam, limit=3))
    while len(status.details("error")) < 3:
        await asyncio.sleep(0.05)
    errors = status.details("error")
    assert all("\n" not in e for e in errors)
    assert errors[0].startswith(f"camera porch ({path}): ")
    assert f"cannot decode video file {path} (corrupt or unsupported format)" in errors[0] or (
        "no frame could be decoded (corrupt or empty file)" in errors[0]
    )
    assert "retrying in 0.1s" in errors[1]  # backoff grows
    good = write_video(tmp_path / "good.avi", [(bus, 10)])
    os.replace(good, path)  # the file becomes readable: the camera picks it up on its next retry
    frames = await asyncio.wait_for(task, 10)
    assert len(frames) >= 3 and frames[0].width == 640
    assert status.states()[-1] == "up" and "capturing" in status.details("up")[-1]


async def test_missing_devices_are_clear_errors_and_retried() -> None:
    for source, text in (
        (9, "cannot open USB camera 9 (missing, busy, or no permission: is the user in 'video'?)"),
        ("/dev/video42", "cannot open /dev/video42"),
        ("picamera2", "picamera2 is not importable: install it with 'sudo apt install python3-picamera2'"),
        ("/nonexistent/cam.mp4", "video file or folder /nonexistent/cam.mp4 not found"),
    ):
        status = Recorder()
        cam = Camera("x", CameraConfig(source=source), on_status=status, backoff=Backoff(0.02, 0.05))
        task = asyncio.create_task(cam.run())
        while len(status.details("error")) < 2:
            await asyncio.sleep(0.02)
        cam.close()
        await asyncio.wait_for(task, 5)
        assert text in status.details("error")[0], status.details("error")[0]
        assert "retrying in" in status.details("error")[1]


async def _serve(video: Path, url: str) -> asyncio.subprocess.Process:
    """ffmpeg streaming the video in real time as MPEG-TS over HTTP (a stand-in for an IP camera)."""
    return await asyncio.create_subprocess_exec(
        "ffmpeg", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(video),
        "-c:v", "mpeg4", "-q:v", "5", "-f", "mpegts", "-listen", "1", url,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.slow
async def test_live_stream_lost_and_reconnected(video: Path, bus: np.ndarray, zidane: np.ndarray) -> None:
    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg is not installed (apt-get install ffmpeg)")
    url = f"http://127.0.0.1:{free_port()}/cam.ts"
    server = await _serve(video, url)
    await asyncio.sleep(0.5)
    status = Recorder()
    clock = Clock()
    cam = Camera("gate", CameraConfig(source=url, fps=5, width=640), clock=clock, on_status=status,
                 backoff=Backoff(0.2, 0.5), stall_s=2.0)  # fmt: skip
    frames: list[tuple[float, VideoFrame]] = []

    async def consume() -> None:
        async for f in cam.frames():
            frames.append((time.monotonic(), f))

    task = asyncio.create_task(consume())
    try:
        while len(frames) < 5:
            await asyncio.sleep(0.05)
        assert all(f.width == 640 and f.height == 360 for _, f in frames)
        assert looks_like(decode(frames[0][1]), bus, zidane) in ("bus", "zidane")
        assert max(clock.now() - f.time for _, f in frames) < 2.0
        server.kill()  # the camera goes away
        await server.wait()
        lost_at = time.monotonic()
        while not any("lost" in d for d in status.details("error")):
            assert time.monotonic() - lost_at < 10, status.items
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.8)
        assert any("cannot open stream" in d for d in status.details("error"))  # retried while it is away
        n_before = len(frames)
        server = await _serve(video, url)  # back
        back_at = time.monotonic()
        while len(frames) < n_before + 5:
            assert time.monotonic() - back_at < 15, status.items
            await asyncio.sleep(0.05)
        assert status.states()[-1] == "up"
    finally:
        cam.close()
        server.kill()
        await server.wait()
        await asyncio.wait_for(task, 10)
