"""The ESPHome native API's transport, server side: plaintext and Noise frames around aioesphomeapi's protobufs.

A connection starts with its first byte: ``0x00`` is a plaintext frame (``00 varint(len) varint(type)
data``, written by aioesphomeapi's ``make_plain_text_packets``), ``0x01`` a Noise frame (``01 len16``).
With Noise the client sends an empty hello frame and its handshake (``Noise_NNpsk0_25519_ChaChaPoly_SHA256``,
prologue ``NoiseAPIInit\\0\\0``); the device answers with its own hello (protocol ``01``, its name, its MAC)
and the handshake's reply, or ``01`` + "Handshake MAC failure" when the client's key is not ours. After
that every frame is ``encrypt(type16 len16 data)``. The Noise state machine and ciphers are the ``noiseprotocol``
package's (as responder, with aioesphomeapi's cipher backend); only the 3-byte frame header is written here.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
from collections.abc import Iterable

from aioesphomeapi._frame_helper.noise import ESPHOME_NOISE_BACKEND
from aioesphomeapi._frame_helper.plain_text import _varuint_to_bytes as varuint_to_bytes
from aioesphomeapi.core import MESSAGE_TYPE_TO_PROTO
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as Proto
from noise.connection import NoiseConnection

log = logging.getLogger("sensorium.esphome")

PROTO_TO_TYPE: dict[type[Proto], int] = {v: k for k, v in MESSAGE_TYPE_TO_PROTO.items()}
PROLOGUE = b"NoiseAPIInit\x00\x00"


def make_plain_text_packets(packets: Iterable[tuple[int, bytes]]) -> list[bytes]:
    """Plaintext frames (``00 varint(len) varint(type) data``), as aioesphomeapi's plaintext helper writes them."""
    out: list[bytes] = []
    for mtype, data in packets:
        out += [b"\0", varuint_to_bytes(len(data)), varuint_to_bytes(mtype), data]
    return out


class ApiError(Exception):
    """The client broke the protocol (the text says how); the connection is closed."""


def decode_key(key: str) -> bytes:
    """A Noise key as ESPHome writes it (base64 of 32 bytes) → its bytes, or ValueError naming what is wrong."""
    try:
        raw = binascii.a2b_base64(key.strip())
    except (binascii.Error, ValueError):
        raise ValueError("the Noise key is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"the Noise key is {len(raw)} bytes, expected 32 (base64 of 32 random bytes)")
    return raw


async def _read_varuint(reader: asyncio.StreamReader) -> int:
    result = shift = 0
    while True:
        b = (await reader.readexactly(1))[0]
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result
        shift += 7
        if shift > 35:
            raise ApiError("varint too long")


class Transport:
    """One API connection's frames: ``recv()`` → (type, payload); ``send(messages)``."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, psk: bytes | None, name: str, mac: str
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.psk = psk
        self.name = name
        self.mac = mac
        self.noise = False
        self._pending_plain = False
        self._proto: NoiseConnection | None = None
        self.closed = False

    async def handshake(self) -> None:
        """Read the first byte and, for Noise, run the handshake (ApiError when the client cannot be served)."""
        first = (await self.reader.readexactly(1))[0]
        if first == 0x00:
            if self.psk is not None:
                # An encrypted device answers a plaintext client with a Noise frame: the client says
                # "requires encryption" to its user.
                self.writer.write(b"\x01\x00\x00")
                raise ApiError("the client speaks plaintext, but this device needs the Noise key")
            self._pending_plain = True
            return
        if first != 0x01:
            raise ApiError(f"unknown frame marker {first:#04x} (expected 0x00 plaintext or 0x01 Noise)")
        if self.psk is None:
            raise ApiError("the client speaks Noise, but this device has no key ([esphome] key_file)")
        self.noise = True
        hello = await self._noise_frame(marker_read=True)
        if hello:
            log.debug("noise client hello carries %d bytes", len(hello))
        msg = await self._noise_frame()
        proto = NoiseConnection.from_name(b"Noise_NNpsk0_25519_ChaChaPoly_SHA256", backend=ESPHOME_NOISE_BACKEND)
        proto.set_as_responder()
        proto.set_psks(self.psk)
        proto.set_prologue(PROLOGUE)
        proto.start_handshake()
        self._frame(b"\x01" + self.name.encode() + b"\x00" + self.mac.encode() + b"\x00")
        if not msg or msg[0] != 0x00:
            raise ApiError("malformed Noise handshake")
        try:
            proto.read_message(msg[1:])
        except Exception:
            self._frame(b"\x01Handshake MAC failure")
            await self.writer.drain()
            raise ApiError("wrong Noise key: Home Assistant's encryption key is not this site's") from None
        self._frame(b"\x00" + proto.write_message())
        self._proto = proto
        await self.writer.drain()

    def _frame(self, payload: bytes) -> None:
        n = len(payload)
        self.writer.write(bytes((0x01, (n >> 8) & 0xFF, n & 0xFF)) + payload)

    async def _noise_frame(self, marker_read: bool = False) -> bytes:
        if marker_read:
            head = b"\x01" + await self.reader.readexactly(2)
        else:
            head = await self.reader.readexactly(3)
        if head[0] != 0x01:
            raise ApiError(f"Noise frame marker {head[0]:#04x}")
        return await self.reader.readexactly((head[1] << 8) | head[2])

    async def recv(self) -> tuple[int, bytes]:
        """The next message's type id and payload."""
        if not self.noise:
            if self._pending_plain:
                self._pending_plain = False  # the 0x00 marker was read by handshake()
            elif (await self.reader.readexactly(1))[0] != 0x00:
                raise ApiError("plaintext frame marker is not 0x00")
            length = await _read_varuint(self.reader)
            mtype = await _read_varuint(self.reader)
            return mtype, await self.reader.readexactly(length)
        assert self._proto is not None
        frame = await self._noise_frame()
        try:
            msg = self._proto.decrypt(frame)
        except Exception:
            raise ApiError("a frame failed to decrypt") from None
        if len(msg) < 4:
            raise ApiError(f"decrypted frame too short: {len(msg)} bytes")
        return (msg[0] << 8) | msg[1], msg[4:]

    @staticmethod
    def parse(mtype: int, payload: bytes) -> Proto | None:
        """The message of type ``mtype`` (None for a type aioesphomeapi does not know)."""
        cls = MESSAGE_TYPE_TO_PROTO.get(mtype)
        if cls is None:
            return None
        try:
            return cls.FromString(payload)
        except DecodeError as exc:
            raise ApiError(f"malformed {cls.__name__}: {exc}") from None

    def send(self, msgs: Iterable[Proto]) -> None:
        """Write messages (dropped once the connection is closed)."""
        if self.closed or self.writer.is_closing():
            return
        packets = [(PROTO_TO_TYPE[type(m)], m.SerializeToString()) for m in msgs]
        if not packets:
            return
        if not self.noise:
            self.writer.writelines(make_plain_text_packets(packets))
            return
        assert self._proto is not None
        for mtype, data in packets:
            n = len(data)
            self._frame(self._proto.encrypt(bytes((mtype >> 8, mtype & 0xFF, n >> 8, n & 0xFF)) + data))

    def close(self) -> None:
        self.closed = True
        self.writer.close()
