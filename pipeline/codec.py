"""The one codec for every message: ZeroMQ multipart ``[topic, header, payload]`` and public JSON.

The header is a version byte followed by the message as msgpack without its ``data`` field; the
payload frame is ``data`` itself, passed through untouched (PCM or JPEG is never re-encoded).
Decoding checks sizes and the version before it parses, and raises ``CodecError`` with a message
that says what was wrong, so a receiver can log it and keep serving.

Every float field must be finite: JSON has no NaN or infinity (msgspec would write ``null``, which no
client can decode back), so ``encode`` and ``to_json`` refuse such a message where it is made and
``decode`` refuses it from a foreign publisher, naming the class and the field.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import msgspec.inspect as mi

from sensorium.pipeline.messages import ALL, WIRE_VERSION, Message, old_topic

MAX_TOPIC = 256
MAX_HEADER = 64 * 1024
MAX_PAYLOAD = 16 * 1024 * 1024

_VERSION_BYTE = bytes([WIRE_VERSION])
_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()


def _build_decoder() -> msgspec.msgpack.Decoder:
    union: Any = ALL[0]
    for cls in ALL[1:]:
        union = union | cls
    return msgspec.msgpack.Decoder(union)


_decoder = _build_decoder()
_json_decoder = msgspec.json.Decoder(_decoder.type)


class CodecError(ValueError):
    """A message could not be encoded or decoded; the text says what was wrong."""


_Floats = tuple[tuple[str, ...], tuple[tuple[str, type], ...]]
_FLOATS: dict[type, _Floats] = {}


def _float_fields(cls: type) -> _Floats:
    """Float fields of a Struct, and its list-of-Struct fields (Word, Box) to look into."""
    if cls not in _FLOATS:
        floats, nested = [], []
        for f in mi.type_info(cls).fields:  # type: ignore[attr-defined]
            t = f.type
            types = t.types if isinstance(t, mi.UnionType) else (t,)
            if any(isinstance(x, mi.FloatType) for x in types):
                floats.append(f.name)
            elif isinstance(t, mi.ListType) and isinstance(t.item_type, mi.StructType):
                nested.append((f.name, t.item_type.cls))
        _FLOATS[cls] = (tuple(floats), tuple(nested))
    return _FLOATS[cls]


def _not_finite(obj: Any) -> str | None:
    """The first float field of ``obj`` that is NaN or infinite, as ``field`` or ``list[i].field``."""
    floats, nested = _FLOATS.get(type(obj)) or _float_fields(type(obj))
    for name in floats:
        v = getattr(obj, name)
        if v is not None and not math.isfinite(v):
            return f"{name} = {v!r}"
    for name, _ in nested:
        for i, item in enumerate(getattr(obj, name)):
            bad = _not_finite(item)
            if bad:
                return f"{name}[{i}].{bad}"
    return None


def check_finite(msg: Message) -> None:
    """Raise ``CodecError`` naming the class and field if a float of ``msg`` is NaN or infinite."""
    bad = _not_finite(msg)
    if bad:
        raise CodecError(f"{type(msg).__name__}.{bad}: not a finite number (JSON cannot carry it)")


for _cls in ALL:
    _float_fields(_cls)


def encode(msg: Message) -> list[bytes]:
    """Frames for ``socket.send_multipart``: topic, versioned header, raw payload."""
    check_finite(msg)
    data: bytes = getattr(msg, "data", b"")
    if data:
        msg.data = b""  # type: ignore[attr-defined]
        try:
            header = _encoder.encode(msg)
        finally:
            msg.data = data  # type: ignore[attr-defined]
    else:
        header = _encoder.encode(msg)
    return [msg.topic().encode(), _VERSION_BYTE + header, data]


def decode(frames: list[bytes] | list[Any]) -> Message:
    """Parse received frames back into a message, or raise ``CodecError``."""
    if len(frames) != 3:
        raise CodecError(f"expected 3 frames [topic, header, payload], got {len(frames)}")
    topic, header, payload = (bytes(f) if not isinstance(f, bytes) else f for f in frames)
    if len(topic) > MAX_TOPIC:
        raise CodecError(f"topic is {len(topic)} bytes, limit {MAX_TOPIC}")
    if not header:
        raise CodecError(f"empty header on topic {topic[:64]!r}")
    if header[0] != WIRE_VERSION:
        raise CodecError(f"unknown wire version {header[0]} on topic {topic[:64]!r} (expected {WIRE_VERSION})")
    if len(header) > MAX_HEADER:
        raise CodecError(f"header is {len(header)} bytes, limit {MAX_HEADER}")
    if len(payload) > MAX_PAYLOAD:
        raise CodecError(f"payload is {len(payload)} bytes, limit {MAX_PAYLOAD}")
    try:
        msg = _decoder.decode(header[1:])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CodecError(f"malformed header on topic {topic[:64]!r}: {exc}") from None
    bad = _not_finite(msg)
    if bad:
        raise CodecError(f"{type(msg).__name__}.{bad} on topic {topic[:64]!r}: not a finite number")
    # Subscribers route on the topic: it must not lie about the message. Its old topic (``old_kind``) is
    # accepted during the transition, from peers not updated yet.
    if topic != msg.topic().encode() and not (type(msg).old_kind and topic == old_topic(msg).encode()):
        raise CodecError(f"{type(msg).__name__} on a topic that does not match it: {topic[:64]!r}")
    if payload:
        if not hasattr(msg, "data"):
            raise CodecError(f"{type(msg).__name__} carries no payload but got {len(payload)} bytes")
        msg.data = payload  # type: ignore[attr-defined]
    return msg


def to_json(msg: Message) -> bytes:
    """Public JSON form (``sensorium events``, ``--events-json``, the client API). Drops raw media."""
    check_finite(msg)
    if getattr(msg, "data", b""):
        data = msg.data  # type: ignore[attr-defined]
        msg.data = b""  # type: ignore[attr-defined]
        try:
            return _json_encoder.encode(msg)
        finally:
            msg.data = data  # type: ignore[attr-defined]
    return _json_encoder.encode(msg)


def from_json(raw: bytes | str) -> Message:
    """Parse the public JSON form back into a message, or raise ``CodecError``."""
    try:
        return _json_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CodecError(f"malformed event JSON: {exc}") from None


def to_dict(msg: Message) -> dict[str, Any]:
    """Public form as a plain dict."""
    return msgspec.json.decode(to_json(msg))
