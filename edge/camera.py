"""Camera sources of an edge node: OpenCV (USB index, /dev/video*, RTSP/HTTP URL, video file),
picamera2 (``source = "picamera2"`` or ``"picamera2:N"``), or a folder of images.

Frames are paced at ``fps``, shrunk to ``width`` (aspect kept; never enlarged), JPEG-encoded at
``jpeg_quality`` and optionally motion-gated (frames whose mean absolute change against the last
SENT frame is below ``motion_threshold`` are skipped, with a keep-alive frame every
``keepalive_s``). The newest frame always wins: a slow consumer gets the latest frame, never a
queue of stale ones; live cameras are read continuously in a thread for the same reason (OpenCV
otherwise hands out frames from its internal buffer). Every OpenCV call runs off the event loop.
A camera that cannot be opened or stops delivering is a one-line error to the status callback and
is reopened with backoff.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from sensorium.edge.retry import Backoff, StatusCallback, report
from sensorium.pipeline.clock import Clock
from sensorium.pipeline.config import CameraConfig
from sensorium.pipeline.messages import VideoFrame

log = logging.getLogger("sensorium.edge.camera")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class CameraError(RuntimeError):
    """A camera cannot be opened or stopped delivering; the text names the camera and the cause."""


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise CameraError(f"OpenCV is not installed ({exc}); pip install 'sensorium[edge]'") from None
    if "OPENCV_LOG_LEVEL" not in os.environ:
        # every failure is reported here in one line; OpenCV's own multi-line warnings only add noise to the journal
        cv2.setLogLevel(0)
    return cv2


# ------------------------------------------------------------------------------- readers
# Readers are blocking; they are only ever called from worker threads.


class _Reader(abc.ABC):
    live: bool = False
    """True for cameras (read continuously, newest frame wins); False for files and folders (read on demand)."""
    fps: float = 0.0
    """The source's own frame rate when known (files), else 0."""

    @abc.abstractmethod
    def read(self) -> np.ndarray | None:
        """The next BGR frame; None at the end of a file/folder or when a live camera fails."""

    def skip(self) -> bool:
        """Advance one frame without decoding it fully; False at the end."""
        return self.read() is not None

    def close(self) -> None:
        """Release the device or file."""


class _CvReader(_Reader):
    def __init__(self, cap: Any, live: bool) -> None:
        self.cap = cap
        self.live = live
        fps = float(cap.get(_cv2().CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.0 < fps < 1000.0 else 0.0

    def read(self) -> np.ndarray | None:
        ok, frame = self.cap.read()
        return frame if ok and frame is not None and frame.size else None

    def skip(self) -> bool:
        return bool(self.cap.grab())

    def close(self) -> None:
        self.cap.release()


class _FolderReader(_Reader):
    def __init__(self, folder: Path, on_bad: Any) -> None:
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise CameraError(f"folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.pos = 0
        self.on_bad = on_bad

    def read(self) -> np.ndarray | None:
        cv2 = _cv2()
        while self.pos < len(self.files):
            path = self.files[self.pos]
            self.pos += 1
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is not None and img.size:
                return img
            self.on_bad(f"cannot decode image {path.name}; skipped")
        return None

    def skip(self) -> bool:
        self.pos += 1
        return self.pos <= len(self.files)


class _PiCamReader(_Reader):
    live = True

    def __init__(self, index: int, width: int) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise CameraError(
                "picamera2 is not importable: install it with 'sudo apt install python3-picamera2' and create "
                "the virtual environment with --system-site-packages"
            ) from None
        self.cam = Picamera2(index)
        height = int(round(width * 3 / 4))
        # "RGB888" is BGR in memory, the order OpenCV's encoder expects.
        self.cam.configure(self.cam.create_video_configuration(main={"size": (width, height), "format": "RGB888"}))
        self.cam.start()

    def read(self) -> np.ndarray | None:
        frame = self.cam.capture_array()
        return frame if frame is not None and frame.size else None

    def close(self) -> None:
        try:
            self.cam.stop()
        finally:
            self.cam.close()


def describe(source: str | int) -> str:
    """The source as a short phrase for messages."""
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return f"USB camera {source}"
    return str(source)


def open_reader(source: str | int, *, width: int = 640, on_bad: Any = None) -> _Reader:
    """Open ``source`` (blocking); ``CameraError`` with the reason when it cannot be opened."""
    cv2 = _cv2()
    on_bad = on_bad or (lambda msg: log.warning("%s", msg))
    if isinstance(source, str) and source.startswith("picamera2"):
        _, _, idx = source.partition(":")
        return _PiCamReader(int(idx or 0), width)
    if isinstance(source, int) or source.isdigit() or source.startswith("/dev/"):
        cap = cv2.VideoCapture(int(source) if str(source).isdigit() else source)
        if not cap.isOpened():
            cap.release()
            raise CameraError(
                f"cannot open {describe(source)} (missing, busy, or no permission: is the user in 'video'?)"
            )
        return _CvReader(cap, live=True)
    if "://" in source:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]
        cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"cannot open stream {source} (unreachable, wrong URL or credentials)")
        return _CvReader(cap, live=True)
    path = Path(source).expanduser()
    if path.is_dir():
        return _FolderReader(path, on_bad)
    if not path.exists():
        raise CameraError(f"video file or folder {path} not found")
    if not os.access(path, os.R_OK):
        raise CameraError(f"video file {path} is not readable (permissions)")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise CameraError(f"cannot decode video file {path} (corrupt or unsupported format)")
    return _CvReader(cap, live=False)


# ------------------------------------------------------------------------------- live grabbing


class _Grabber:
    """Reads a live camera continuously in a thread, keeping only the newest frame."""

    def __init__(self, reader: _Reader, clock: Clock) -> None:
        self.reader = reader
        self.clock = clock
        self.latest: tuple[float, np.ndarray] | None = None
        self.count = 0
        """Frames read so far."""
        self.failed = ""
        """Why reading stopped ("" while fine)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="camera-grab", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.reader.read()
            except Exception as exc:  # any driver error means the camera is lost
                self.failed = f"read failed: {exc}"
                return
            if frame is None:
                self.failed = "stopped delivering frames"
                return
            self.latest = (self.clock.now(), frame)
            self.count += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


# ------------------------------------------------------------------------------- the camera


class LatestSlot:
    """Holds the newest item only: ``put`` replaces what the consumer has not taken yet."""

    def __init__(self) -> None:
        self._item: Any = None
        self._event = asyncio.Event()
        self.replaced = 0
        """Items overwritten before anyone took them (stale frames never sent)."""

    def put(self, item: Any) -> None:
        """Store ``item``, replacing an untaken one."""
        if self._event.is_set():
            self.replaced += 1
        self._item = item
        self._event.set()

    def take_nowait(self) -> Any:
        """The waiting item or None."""
        if not self._event.is_set():
            return None
        self._event.clear()
        item, self._item = self._item, None
        return item

    async def take(self) -> Any:
        """Wait for an item and take it."""
        await self._event.wait()
        return self.take_nowait()


class Camera:
    """One camera of an edge node, producing ``VideoFrame``s (``seq`` left 0 for the publisher)."""

    def __init__(
        self,
        name: str,
        config: CameraConfig,
        *,
        room: str = "",
        clock: Clock | None = None,
        on_status: StatusCallback | None = None,
        backoff: Backoff | None = None,
        loop_files: bool = False,
        keepalive_s: float = 10.0,
        stall_s: float = 3.0,
    ) -> None:
        if config.fps <= 0:
            raise CameraError(f"camera {name}: fps must be > 0, got {config.fps}")
        if not 1 <= config.jpeg_quality <= 100:
            raise CameraError(f"camera {name}: jpeg_quality must be 1–100, got {config.jpeg_quality}")
        self.name = name
        self.config = config
        self.room = room
        self.clock = clock or Clock()
        self.on_status = on_status
        self.backoff = backoff or Backoff()
        self.loop_files = loop_files
        """Restart a video file or folder at its end instead of finishing."""
        self.keepalive_s = keepalive_s
        """With motion gating, still send one frame this often so consumers know the camera lives."""
        self.stall_s = stall_s
        """A live camera without a new frame for this long is lost and reopened."""
        self.slot = LatestSlot()
        self.captured = 0
        """Frames read from the source and considered."""
        self.skipped_motion = 0
        """Frames skipped by motion gating."""
        self.produced = 0
        """Frames encoded and handed to the slot."""
        self.errors: list[str] = []
        """Every error reported so far (one line each)."""
        self.finished = False
        """True once a file/folder source ended (without ``loop_files``)."""
        self._last_sent_gray: np.ndarray | None = None
        self._last_sent_t = 0.0
        self._why = ""
        self._closed = False

    # -------------------------------------------------------------- processing (in a thread)

    def process(self, frame: np.ndarray, t: float) -> VideoFrame | None:
        """Resize, gate on motion and JPEG-encode one BGR frame; None when motion gating skips it."""
        cv2 = _cv2()
        h, w = frame.shape[:2]
        if w > self.config.width:
            nh = max(1, int(round(h * self.config.width / w)))
            frame = cv2.resize(frame, (self.config.width, nh), interpolation=cv2.INTER_AREA)
            h, w = frame.shape[:2]
        if self.config.motion_threshold > 0:
            small = cv2.resize(frame, (160, max(1, int(round(160 * h / w)))), interpolation=cv2.INTER_AREA)
            gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
            prev = self._last_sent_gray
            if prev is not None and prev.shape == gray.shape and t - self._last_sent_t < self.keepalive_s:
                change = float(np.mean(cv2.absdiff(gray, prev)))
                if change < self.config.motion_threshold:
                    self.skipped_motion += 1
                    return None
            self._last_sent_gray = gray
            self._last_sent_t = t
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(self.config.jpeg_quality)])
        if not ok:
            raise CameraError(f"camera {self.name}: JPEG encoding failed")
        return VideoFrame(time=t, room=self.room, source=self.name, width=w, height=h, data=buf.tobytes())

    # -------------------------------------------------------------- async side

    def close(self) -> None:
        """Stop capturing (``run`` returns within one frame interval)."""
        self._closed = True

    def _error(self, what: str, delay: float) -> None:
        msg = f"camera {self.name} ({describe(self.config.source)}): {what}; retrying in {delay:.1f}s"
        self.errors.append(msg)
        log.error("%s", msg)
        report(self.on_status, "error", msg)

    def _bad_input(self, what: str) -> None:
        msg = f"camera {self.name}: {what}"
        self.errors.append(msg)
        log.warning("%s", msg)
        report(self.on_status, "error", msg)

    async def run(self) -> None:
        """Capture until ``close`` (or the end of a file without ``loop_files``), putting frames in ``slot``."""
        loop = asyncio.get_running_loop()
        src = self.config.source
        while not self._closed:
            try:
                reader = await asyncio.to_thread(open_reader, src, width=self.config.width, on_bad=self._bad_input)
            except CameraError as exc:
                delay = self.backoff.next()
                self._error(str(exc), delay)
                await asyncio.sleep(delay)
                continue
            report(self.on_status, "up", f"camera {self.name}: capturing {describe(src)} at {self.config.fps:g} fps")
            try:
                if reader.live:
                    ok = await self._run_live(reader, loop)
                else:
                    ok = await self._run_file(reader, loop)
            finally:
                await asyncio.to_thread(reader.close)
            if ok is None:  # a file/folder ended
                if self.loop_files and not self._closed:
                    continue
                self.finished = True
                log.info("camera %s: %s ended", self.name, describe(src))
                return
            if not ok and not self._closed:
                delay = self.backoff.next()
                self._error(self._why, delay)
                await asyncio.sleep(delay)

    async def _emit(self, frame: np.ndarray, t: float) -> None:
        self.captured += 1
        msg = await asyncio.to_thread(self.process, frame, t)
        if msg is not None:
            self.produced += 1
            self.slot.put(msg)

    async def _run_live(self, reader: _Reader, loop: asyncio.AbstractEventLoop) -> bool:
        grab = _Grabber(reader, self.clock)
        period = 1.0 / self.config.fps
        last_count = 0
        last_new = loop.time()
        next_tick = loop.time()
        try:
            while not self._closed:
                next_tick += period
                await asyncio.sleep(max(0.0, next_tick - loop.time()))
                if next_tick < loop.time() - period:
                    next_tick = loop.time()  # fell behind (slow encode): do not burst to catch up
                if grab.failed:
                    self._why = f"lost: {grab.failed}"
                    return False
                latest = grab.latest
                if latest is None or grab.count == last_count:
                    if loop.time() - last_new > self.stall_s:
                        self._why = f"lost: no frame for {self.stall_s:.1f}s"
                        return False
                    continue
                last_count, last_new = grab.count, loop.time()
                if self.captured == 0 or self.backoff.failures:
                    self.backoff.reset()
                await self._emit(latest[1], latest[0])
            return True
        finally:
            await asyncio.to_thread(grab.stop)

    async def _run_file(self, reader: _Reader, loop: asyncio.AbstractEventLoop) -> bool | None:
        period = 1.0 / self.config.fps
        # a file recorded faster than we publish is sampled on its own timeline, as a camera would see it
        stride = reader.fps / self.config.fps if reader.fps > self.config.fps else 1.0
        pos = 0.0
        read = 0
        next_tick = loop.time()
        while not self._closed:
            frame = await asyncio.to_thread(reader.read)
            t = self.clock.now()
            if frame is None:
                if read == 0:
                    self._why = "no frame could be decoded (corrupt or empty file)"
                    return False
                return None
            read += 1
            self.backoff.reset()
            await self._emit(frame, t)
            pos += stride
            skip = int(pos) - read
            if skip > 0:
                ended = not await asyncio.to_thread(_skip, reader, skip)
                read += skip
                if ended:
                    return None
            next_tick += period
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            if next_tick < loop.time() - period:
                next_tick = loop.time()
        return True

    async def frames(self) -> AsyncIterator[VideoFrame]:
        """Run the camera and yield the newest frame each time the consumer asks (stale ones are dropped)."""
        task = asyncio.create_task(self.run(), name=f"camera-{self.name}")
        try:
            while True:
                getter = asyncio.ensure_future(self.slot.take())
                done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                    continue
                getter.cancel()
                last = self.slot.take_nowait()
                if last is not None:
                    yield last
                task.result()  # re-raise a crash
                return
        finally:
            self.close()
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _skip(reader: _Reader, n: int) -> bool:
    for _ in range(n):
        if not reader.skip():
            return False
    return True
