"""Record everything on the bus to MCAP, and read recordings back (damaged ones up to the damage).

Layout of a sensorium MCAP file (profile ``"sensorium"``):

- One channel per bus topic (``audio/kitchen/pi``, ``wake/kitchen/gpu0`` …).
- Streams (``AudioChunk``, ``VideoFrame``, ``Utterance``, ``TtsAudio``) and control messages use the
  message encoding ``"sensorium-v1"``: the codec's frames kept byte for byte, as
  ``u32 little-endian header length | header frame (version byte + msgpack) | payload frame``.
  The channel's schema (encoding ``"jsonschema"``, name ``sensorium.<Class>``) describes the
  header's fields. Replay publishes these frames again without re-encoding PCM or JPEG.
- Events and commands use the message encoding ``"json"`` with their public JSON form
  (``pipeline.codec.to_json``) and a JSON schema per message type, so Foxglove decodes them: its
  Raw Messages panel shows every event, its Plot panel can chart ``score``, ``actual_ms`` …, and
  its log/timeline shows when each was captured. Foxglove lists the stream channels with their
  message counts and rates but cannot decode ``sensorium-v1`` payloads (audio and JPEG frames).
- With ``foxglove_images`` (``sensorium record --foxglove-images``), every camera frame is also
  written as a ``foxglove.CompressedImage`` (JSON, base64 JPEG) on ``foxglove/video/<room>/<camera>``
  so Foxglove's Image panel plays the cameras; replay ignores these copies.
- Labels of a built session: topic ``labels``, ``"json"``, schema ``sensorium.Label``.
- Metadata record ``sensorium``: format version and who wrote the file; built sessions add
  ``sensorium.session`` (rooms, nodes, cameras).

Times: ``log_time`` is the message's capture time (its ``time`` field, hub clock) so a file plays
and plots on the timeline of what was heard and seen; ``publish_time`` is when the recorder got
it off the bus, so ``publish_time - log_time`` is the delay the bus and stages added.

Rotation: with ``rotate_bytes`` or ``rotate_seconds`` the recorder closes the file and starts
``<stem>.1.mcap``, ``<stem>.2.mcap`` …; each file is complete and self-describing. Chunks are
closed at least every ``flush_seconds`` and flushed to disk, so a crash loses at most that much.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import struct
import time as _time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from sensorium.pipeline import codec
from sensorium.pipeline.messages import COMMANDS, WIRE_VERSION, Message, VideoFrame

log = logging.getLogger("sensorium.recorder")

PROFILE = "sensorium"
RAW_ENCODING = "sensorium-v1"
JSON_ENCODING = "json"
LABELS_TOPIC = "labels"
_LEN = struct.Struct("<I")
_MAGIC = b"\x89MCAP0\r\n"


FOXGLOVE_PREFIX = "foxglove/"
_FOXGLOVE_IMAGE = json.dumps(
    {
        "title": "foxglove.CompressedImage",
        "type": "object",
        "properties": {
            "timestamp": {
                "type": "object",
                "properties": {"sec": {"type": "integer"}, "nsec": {"type": "integer"}},
            },
            "frame_id": {"type": "string"},
            "data": {"type": "string", "contentEncoding": "base64"},
            "format": {"type": "string"},
        },
        "required": ["timestamp", "frame_id", "data", "format"],
    }
).encode()


class RecordingError(ValueError):
    """A file is not a sensorium MCAP recording, or cannot be read at all; the text says why."""


def _ns(t: float) -> int:
    return max(round(t * 1e9), 0)


def _is_json_channel(msg: Message) -> bool:
    return msg.is_event or isinstance(msg, COMMANDS)


def object_schema(tp: Any) -> dict[str, Any]:
    """msgspec's JSON schema with the top level inlined: Foxglove wants ``"type": "object"`` there."""
    schema = msgspec.json.schema(tp)
    ref = schema.get("$ref", "")
    if ref.startswith("#/$defs/"):
        defs = schema["$defs"]
        top = dict(defs[ref.rsplit("/", 1)[1]])
        top["$defs"] = defs  # nested types (Word, Box) keep resolving as "#/$defs/…"
        return top
    return schema


def _schema_for(cls: type[Message], raw: bool) -> bytes:
    schema = object_schema(cls)
    if raw:
        schema["description"] = (
            f"{cls.__name__} header in encoding {RAW_ENCODING}: u32 LE header length, header frame "
            f"(version byte {WIRE_VERSION} + msgpack of these fields without 'data'), then the raw payload"
        )
    return json.dumps(schema, separators=(",", ":")).encode()


def pack_frames(header: bytes, payload: bytes) -> bytes:
    """The ``sensorium-v1`` message body: length-prefixed header frame, then the payload frame."""
    return _LEN.pack(len(header)) + header + payload


def unpack_frames(data: bytes) -> tuple[bytes, bytes]:
    """Split a ``sensorium-v1`` body into (header frame, payload frame)."""
    if len(data) < _LEN.size:
        raise codec.CodecError(f"{RAW_ENCODING} record is {len(data)} bytes, too short for its length prefix")
    (n,) = _LEN.unpack_from(data)
    if n > len(data) - _LEN.size:
        raise codec.CodecError(f"{RAW_ENCODING} header length {n} exceeds the record ({len(data)} bytes)")
    return data[_LEN.size : _LEN.size + n], data[_LEN.size + n :]


class Recorder:
    """Writes bus messages into MCAP files, one channel per topic, rotating by size or time."""

    def __init__(
        self,
        path: str | Path,
        rotate_bytes: int = 0,
        rotate_seconds: float = 0.0,
        flush_seconds: float = 1.0,
        chunk_size: int = 256 * 1024,
        metadata: dict[str, str] | None = None,
        foxglove_images: bool = False,
    ) -> None:
        self.path = Path(path)
        self.foxglove_images = foxglove_images
        """Also write each camera frame as ``foxglove.CompressedImage`` on ``foxglove/<topic>`` (+33 %
        of the frames' size, base64) so Foxglove's Image panel plays the cameras."""
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self.flush_seconds = flush_seconds
        self.chunk_size = chunk_size
        self.metadata = dict(metadata or {})
        self.paths: list[Path] = []
        """Every file written so far, in order."""
        self.messages = 0
        """Messages written over all files."""
        self.errors = 0
        """Frames that could not be decoded (skipped, logged)."""
        self._writer: Any = None
        self._fp: BinaryIO | None = None
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self._opened = 0.0
        self._last_flush = 0.0
        self._closed = False
        self._open()  # a recording that got no messages is still a valid (empty) file

    # ------------------------------------------------------------------------------------ files

    def _next_path(self) -> Path:
        n = len(self.paths)
        if n == 0:
            return self.path
        return self.path.with_name(f"{self.path.stem}.{n}{self.path.suffix or '.mcap'}")

    def _open(self) -> None:
        from mcap.writer import CompressionType, Writer

        path = self._next_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fp = open(path, "wb")
        try:
            import zstandard  # noqa: F401

            compression = CompressionType.ZSTD
        except ImportError:
            compression = CompressionType.NONE
        self._writer = Writer(self._fp, chunk_size=self.chunk_size, compression=compression)
        self._writer.start(profile=PROFILE, library="sensorium recorder")
        meta = {"format": RAW_ENCODING, "wire_version": str(WIRE_VERSION), "part": str(len(self.paths))}
        self._writer.add_metadata("sensorium", meta)
        if self.metadata:
            self._writer.add_metadata("sensorium.session", self.metadata)
        self._schemas.clear()
        self._channels.clear()
        self.paths.append(path)
        self._opened = self._last_flush = _time.monotonic()

    def _finish(self) -> None:
        if self._writer is not None:
            self._writer.finish()
            assert self._fp is not None
            self._fp.close()
            self._writer = None
            self._fp = None

    def _maybe_rotate(self) -> None:
        if self._writer is None:
            self._open()
            return
        assert self._fp is not None
        too_big = self.rotate_bytes and self._fp.tell() >= self.rotate_bytes
        too_old = self.rotate_seconds and _time.monotonic() - self._opened >= self.rotate_seconds
        if too_big or too_old:
            self._finish()
            self._open()

    def _maybe_flush(self) -> None:
        now = _time.monotonic()
        if now - self._last_flush < self.flush_seconds:
            return
        self._last_flush = now
        # mcap has no public "close this chunk now"; finish() makes the same call. Without it a quiet
        # bus would keep minutes of events in memory, lost on a crash.
        finalize = getattr(self._writer, "_Writer__finalize_chunk", None)
        if finalize is not None:
            finalize()
        assert self._fp is not None
        self._fp.flush()

    def _channel(self, topic: str, encoding: str, schema_name: str, schema: bytes) -> int:
        if topic in self._channels:
            return self._channels[topic]
        if schema_name not in self._schemas:
            self._schemas[schema_name] = self._writer.register_schema(schema_name, "jsonschema", schema)
        cid = self._writer.register_channel(topic, encoding, self._schemas[schema_name])
        self._channels[topic] = cid
        return cid

    # ------------------------------------------------------------------------------------ writing

    def write(self, frames: list[bytes], time: float | None = None) -> None:
        """Record one message as received from the bus (``[topic, header, payload]``).

        ``time`` is when it was received (hub clock; default now). Undecodable frames are counted,
        logged and skipped: a bad sender must not stop the recording.
        """
        try:
            msg = codec.decode(frames)
        except codec.CodecError as exc:
            self.errors += 1
            log.warning("not recorded: %s", exc)
            return
        topic, header, payload = (bytes(f) for f in frames)
        self._write(msg, topic.decode(errors="replace"), header, payload, time)

    def write_message(self, msg: Message, time: float | None = None) -> None:
        """Record a message object (encodes it with the codec first)."""
        topic, header, payload = codec.encode(msg)
        self._write(msg, topic.decode(), header, payload, time)

    def _write(self, msg: Message, topic: str, header: bytes, payload: bytes, time: float | None) -> None:
        if self._closed:
            raise RuntimeError(f"recorder for {self.path} is closed")
        self._maybe_rotate()
        received = _time.time() if time is None else time
        cls = type(msg)
        if _is_json_channel(msg):
            cid = self._channel(topic, JSON_ENCODING, f"sensorium.{cls.__name__}", _schema_for(cls, raw=False))
            body = codec.to_json(msg)
        else:
            cid = self._channel(topic, RAW_ENCODING, f"sensorium.{cls.__name__}", _schema_for(cls, raw=True))
            body = pack_frames(header, payload)
        captured = msg.time or received
        self._writer.add_message(cid, log_time=_ns(captured), publish_time=_ns(received), data=body, sequence=msg.seq)
        self.messages += 1
        if self.foxglove_images and isinstance(msg, VideoFrame) and payload:
            fid = self._channel(f"{FOXGLOVE_PREFIX}{topic}", JSON_ENCODING, "foxglove.CompressedImage", _FOXGLOVE_IMAGE)
            ns = _ns(captured)
            image = {
                "timestamp": {"sec": ns // 1_000_000_000, "nsec": ns % 1_000_000_000},
                "frame_id": msg.source,
                "data": base64.b64encode(payload).decode(),
                "format": msg.encoding,
            }
            self._writer.add_message(fid, log_time=ns, publish_time=_ns(received), data=json.dumps(image).encode())
        self._maybe_flush()

    def write_json(self, topic: str, schema_name: str, schema: bytes, obj: Any, time: float) -> None:
        """Record a JSON record that is not a bus message (e.g. a session label)."""
        if self._closed:
            raise RuntimeError(f"recorder for {self.path} is closed")
        self._maybe_rotate()
        cid = self._channel(topic, JSON_ENCODING, schema_name, schema)
        self._writer.add_message(cid, log_time=_ns(time), publish_time=_ns(time), data=msgspec.json.encode(obj))
        self.messages += 1

    def close(self) -> None:
        """Finish the current file (summary and index written); safe to call twice."""
        if not self._closed:
            self._closed = True
            self._finish()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def record(
    subscriber: Any,
    recorder: Recorder,
    stop: asyncio.Event | None = None,
    clock: Any = None,
    limit: int = 0,
    drain: float = 0.2,
) -> int:
    """Write everything ``subscriber`` receives into ``recorder`` until ``stop`` is set.

    ``subscriber`` gives raw frames through ``recv_frames()`` (or ``recv_raw()``); decoded messages
    through ``recv()`` also work. Once ``stop`` is set, what already arrived is still written (until
    ``drain`` seconds pass without a message). Returns the number of messages recorded; ``limit`` > 0
    stops after that many.
    """
    now = clock.now if clock is not None else _time.time
    raw = getattr(subscriber, "recv_frames", None) or getattr(subscriber, "recv_raw", None)
    count = 0
    stop = stop or asyncio.Event()

    def write(item: Any) -> None:
        nonlocal count
        if isinstance(item, Message):
            recorder.write_message(item, now())
        else:
            recorder.write(list(item), now())
        count += 1

    stopper = asyncio.ensure_future(stop.wait())
    getter: asyncio.Future[Any] | None = None
    try:
        while not stop.is_set() and (limit <= 0 or count < limit):
            getter = asyncio.ensure_future(raw() if raw is not None else subscriber.recv())
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                break
            write(getter.result())
            getter = None
        while limit <= 0 or count < limit:  # what is already on its way belongs to the recording
            if getter is None:
                getter = asyncio.ensure_future(raw() if raw is not None else subscriber.recv())
            try:
                async with asyncio.timeout(drain):
                    item = await asyncio.shield(getter)
            except TimeoutError:
                break
            getter = None
            write(item)
    finally:
        stopper.cancel()
        if getter is not None:
            getter.cancel()
    return count


@contextlib.asynccontextmanager
async def recording(
    endpoints: Any,
    path: str | Path,
    *,
    clock: Any = None,
    curve: Any = None,
    prefixes: Iterable[str] = ("",),
    **recorder_options: Any,
) -> AsyncIterator[Recorder]:
    """Record a hub's bus into ``path`` while the block runs (hub ``record = …``, demo, tests).

    ``endpoints`` are the hub's (``pipeline.bus.Endpoints``); ``recorder_options`` go to ``Recorder``
    (rotation, ``foxglove_images`` …). On exit the messages already on their way are written and the
    file is finished.
    """
    from sensorium.pipeline.bus import Subscriber

    sub = Subscriber(endpoints, list(prefixes), curve=curve)
    rec = Recorder(path, **recorder_options)
    stop = asyncio.Event()
    task = asyncio.create_task(record(sub, rec, stop, clock), name="recorder")
    await asyncio.sleep(0.2)  # the subscription reaches the proxy before anything worth recording
    try:
        yield rec
    finally:
        stop.set()
        try:
            await task
        finally:
            rec.close()
            sub.close()


# ---------------------------------------------------------------------------------------- reading


@dataclass
class Recorded:
    """One message read back from a recording."""

    topic: str
    """Channel topic."""
    log_time: float
    """Capture time, seconds (hub clock of the recording)."""
    publish_time: float
    """When the recorder received it, seconds."""
    msg: Message | None = None
    """The message (bus channels)."""
    label: dict[str, Any] | None = None
    """The record (the ``labels`` channel and other non-bus JSON channels)."""
    frames: list[bytes] = field(default_factory=list)
    """Original ``[topic, header, payload]`` frames (``sensorium-v1`` channels only)."""


@dataclass
class ReadResult:
    """What reading a recording found besides its messages."""

    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    """Metadata records by name."""
    damage: str = ""
    """Why reading stopped early ("" if the file was read to its end)."""
    skipped: int = 0
    """Messages that could not be decoded (logged, skipped)."""
    messages: int = 0
    """Messages read."""


def check_mcap(path: str | Path) -> None:
    """Raise ``RecordingError`` unless ``path`` exists and starts like an MCAP file."""
    p = Path(path)
    if not p.exists():
        raise RecordingError(f"{p}: file not found")
    if p.is_dir():
        raise RecordingError(f"{p}: is a folder, expected an .mcap file")
    with open(p, "rb") as fp:
        head = fp.read(len(_MAGIC))
    if head != _MAGIC:
        raise RecordingError(f"{p}: not an MCAP file (it does not start with the MCAP magic bytes)")


def read(path: str | Path, result: ReadResult | None = None) -> Iterator[Recorded]:
    """Messages of a recording in file order; stops with a warning at the first damage.

    A file that is not MCAP raises ``RecordingError``. A truncated or corrupt file yields every
    message before the damage, logs a warning and sets ``result.damage``.
    """
    from mcap.records import Channel, Metadata, Schema
    from mcap.records import Message as McapMessage
    from mcap.stream_reader import StreamReader

    check_mcap(path)
    res = result if result is not None else ReadResult()
    channels: dict[int, Channel] = {}
    schemas: dict[int, Schema] = {}
    with open(path, "rb") as fp:
        reader = StreamReader(fp, validate_crcs=True, record_size_limit=1 << 28)
        records = iter(reader.records)
        while True:
            try:
                rec = next(records)
            except StopIteration:
                break
            except Exception as exc:  # the mcap reader raises many types on damage
                kind = type(exc).__name__
                why = str(exc) or "unexpected end of file"
                res.damage = f"{path}: damaged at byte {fp.tell()} ({kind}: {why})"
                log.warning("%s; replaying the %d messages before it", res.damage, res.messages)
                break
            if isinstance(rec, Schema):
                schemas[rec.id] = rec
            elif isinstance(rec, Channel):
                channels[rec.id] = rec
            elif isinstance(rec, Metadata):
                res.metadata[rec.name] = dict(rec.metadata)
            elif isinstance(rec, McapMessage):
                ch = channels.get(rec.channel_id)
                if ch is None:
                    res.skipped += 1
                    continue
                if ch.topic.startswith(FOXGLOVE_PREFIX):
                    continue  # viewer copies of camera frames; the frames themselves are on their own topic
                try:
                    item = _decode(ch, rec)
                except (codec.CodecError, msgspec.DecodeError) as exc:
                    res.skipped += 1
                    log.warning("%s: skipped a message on %s: %s", path, ch.topic, exc)
                    continue
                res.messages += 1
                yield item


def _decode(ch: Any, rec: Any) -> Recorded:
    out = Recorded(topic=ch.topic, log_time=rec.log_time / 1e9, publish_time=rec.publish_time / 1e9)
    if ch.message_encoding == RAW_ENCODING:
        header, payload = unpack_frames(rec.data)
        out.frames = [ch.topic.encode(), header, payload]
        out.msg = codec.decode(out.frames)
    elif ch.message_encoding == JSON_ENCODING and ch.topic != LABELS_TOPIC:
        out.msg = codec.from_json(rec.data)
    elif ch.message_encoding == JSON_ENCODING:
        out.label = msgspec.json.decode(rec.data)
    else:
        raise codec.CodecError(f"unknown message encoding {ch.message_encoding!r}")
    return out


def read_all(paths: Iterable[str | Path]) -> tuple[list[Recorded], ReadResult]:
    """Every message of one or more files (rotated parts in order), sorted by capture time."""
    res = ReadResult()
    items: list[Recorded] = []
    for p in paths:
        part = ReadResult()
        items.extend(read(p, part))
        res.metadata.update(part.metadata)
        res.skipped += part.skipped
        res.messages += part.messages
        if part.damage and not res.damage:
            res.damage = part.damage
    items.sort(key=lambda r: r.log_time)
    return items, res
