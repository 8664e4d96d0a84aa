"""``sensorium esphome``: the room devices, their hub link, the site's Noise key and their mDNS announcements."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from sensorium.bridges.esphome.api import decode_key
from sensorium.bridges.esphome.device import ESPHOME_VERSION, Device
from sensorium.bridges.wyoming.bus import Bus
from sensorium.pipeline.bus import Endpoints
from sensorium.pipeline.clock import Clock
from sensorium.pipeline.config import ConfigError, Deployment
from sensorium.pipeline.messages import Message, Presence, Say, StartConversation
from sensorium.pipeline.security import CurveKeys

log = logging.getLogger("sensorium.esphome")


def load_key(path: str | Path) -> str:
    """The site's Noise key from ``path`` (base64 of 32 bytes), created (mode 0600) when the file is missing."""
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        log.info("esphome: created the site's Noise key in %s (give it to Home Assistant)", p)
        return key
    key = p.read_text().strip()
    try:
        decode_key(key)
    except ValueError as exc:
        raise ConfigError(f"[esphome] key_file {p}: {exc}") from None
    return key


class Server:
    """All rooms' devices of one deployment."""

    def __init__(
        self,
        deployment: Deployment,
        *,
        endpoints: Endpoints | None = None,
        clock: Clock | None = None,
        curve: CurveKeys | None = None,
        wake_words: list[str] | None = None,
    ) -> None:
        cfg = deployment.esphome
        if cfg is None:
            raise ConfigError(f"{deployment.path}: no [esphome] table")
        self.deployment = deployment
        self.config = cfg
        self.name = cfg.name
        self.key = load_key(cfg.key_file) if cfg.key_file else ""
        self.psk = decode_key(self.key) if self.key else None
        self.wake_words = wake_words or ["hey_jarvis"]
        endpoints = endpoints or Endpoints.from_address(deployment.hub.address)
        prefixes = ["audio/", "wake/", "arbitration/", "playback/", "transcript/", "presence/", "start_conversation/"]
        self.bus = Bus(endpoints, f"{cfg.name}-esphome", prefixes, clock=clock, curve=curve)
        mic_rooms = [r for r in deployment.rooms if deployment.microphones(r)]
        self.devices = {room: Device(self, room, port) for room, port in cfg.ports(mic_rooms).items()}
        self.pipeline_end: dict[str, float] = {}
        """Room → when its last pipeline ended in Home Assistant (monotonic; for the benchmark)."""
        self.first_audio: dict[str, float] = {}
        """Room → when its last played audio went to the edge (monotonic)."""
        self._zc: Any = None
        self.started = time.monotonic()
        self.cooldown = float(cfg.greet_cooldown)
        self.greeted: dict[str, float] = {}
        """Person → when they were last greeted or addressed by ``start_conversation`` (monotonic)."""
        self.where: dict[str, str] = {}
        """Person → the room they were last seen entering (``presence``)."""
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.bus.start()
        self.bus.listen(Presence, self._on_presence)
        self.bus.listen(StartConversation, self._on_converse)
        for d in self.devices.values():
            if not d.speaker:
                log.warning(
                    "esphome: %s has no edge with a loudspeaker: answers and announcements are not played", d.room
                )
            await d.start(self.config.host)
        if self.config.zeroconf:
            await self._announce()

    def _on_presence(self, msg: Message) -> None:
        if not isinstance(msg, Presence) or msg.person in ("", "unknown"):
            return
        if msg.state == "left":
            if self.where.get(msg.person) == msg.room:
                del self.where[msg.person]
            return
        if msg.state != "entered":
            return
        self.where[msg.person] = msg.room
        device = self.devices.get(msg.room)
        if device is None or not self.config.greet:
            return
        if self._cooled(msg.person, self.cooldown, f"entered the {msg.room}"):
            text = self.config.greet.replace("{person}", msg.person.replace("_", " ").title())
            self._spawn(self.converse(device, text, f"greeting {msg.person}"))

    def _on_converse(self, msg: Message) -> None:
        if not isinstance(msg, StartConversation):
            return
        room = msg.room or self.where.get(msg.person, "")
        device = self.devices.get(room)
        if device is None:
            where = f"the {room}" if room else f"{msg.person or 'nobody'} (not in any known room)"
            log.warning(
                "esphome: start_conversation from %s for %s: no room device there (devices: %s); not started",
                msg.source or "?", where, ", ".join(sorted(self.devices)),
            )  # fmt: skip
            return
        if msg.person and not self._cooled(msg.person, msg.cooldown, "addressed by start_conversation"):
            return
        what = f"starting a conversation with {msg.person or room}"
        self._spawn(self.converse(device, msg.text, what, msg.answer_id))

    def _cooled(self, person: str, cooldown: float, what: str) -> bool:
        """True (and the person's time noted) unless ``person`` was greeted or addressed within ``cooldown``."""
        now = time.monotonic()
        last = self.greeted.get(person)
        if last is not None and now - last < cooldown:
            log.info("esphome: %s %s; greeted %.0f s ago, not again", person, what, now - last)
            return False
        self.greeted[person] = now
        return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def converse(self, device: Device, text: str, what: str, answer_id: str = "") -> None:
        """Say ``text`` in the device's room (our TTS), then listen there without a wake word."""
        aid = answer_id or f"esphome-greet-{uuid.uuid4().hex[:8]}"
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        device.playing[aid] = fut
        log.info("esphome: %s in the %s", what, device.room)
        await self.bus.publish(Say(room=device.room, answer_id=aid, text=text))
        try:
            async with asyncio.timeout(20.0):
                await fut
        except TimeoutError:
            device.playing.pop(aid, None)
            log.warning("esphome: %s: the prompt in the %s was not reported played", what, device.room)
            return
        device.listen_now()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._zc is not None:
            await self._zc.async_unregister_all_services()
            await self._zc.async_close()
        for d in self.devices.values():
            await d.stop()
        await self.bus.close()

    async def _announce(self) -> None:
        from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

        addr = self.config.advertise or _lan_address()
        self._zc = AsyncZeroconf()
        for d in self.devices.values():
            info = AsyncServiceInfo(
                "_esphomelib._tcp.local.",
                f"{d.name}._esphomelib._tcp.local.",
                addresses=[socket.inet_aton(addr)],
                port=d.port,
                properties={
                    "version": ESPHOME_VERSION,
                    "mac": d.mac.replace(":", "").lower(),
                    "board": "host",
                    "platform": "HOST",
                    "network": "ethernet",
                    "friendly_name": d.friendly,
                    "api_encryption": "Noise_NNpsk0_25519_ChaChaPoly_SHA256" if self.psk else "",
                },
                server=f"{d.name}.local.",
            )
            await self._zc.async_register_service(info)


def _lan_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"
