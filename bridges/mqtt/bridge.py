"""The MQTT bridge: a hub client that keeps the house's presence on the broker, and takes commands back.

Three loops around one state (``bridges.mqtt.state.House``):

* **hub → queue**: the exactly-once event stream (``Client.events``), resumed after the last sequence
  number whose messages reached the broker (saved in ``<data_dir>/mqtt-<site>.json`` with the state).
  A first start without that file, and a resume that finds the events it needs gone from the hub's
  bounded log (``EventsLost``), take who is where from the hub's presence snapshot.
* **queue → broker** (while connected): each event is folded into the state, the retained state
  topics that changed are published (QoS 1, retained), then the event's own messages; only then is
  the state file written. A broker that drops in the middle leaves the event's messages queued for
  the next connection, so nothing is lost and no state change is skipped.
* **broker → hub**: ``say``/``say_person``/``stop`` commands become ``Client.say``/``Client.stop``;
  Home Assistant's ``online`` birth message re-sends discovery.

Every (re)connect publishes availability, discovery and the whole state again (the broker may have
restarted without its retained messages). Availability follows the hub too: ``offline`` when the
hub stops answering heartbeats, ``online`` when it is back; the broker's last will and a clean stop
publish ``offline``. A broker that is down is retried with backoff (1 s doubling to 30 s); one that
refuses the credentials ends the bridge with ``BridgeError`` (systemd restarts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec
from aiomqtt.exceptions import MqttConnectError

from sensorium.bridges.mqtt import discovery, state
from sensorium.bridges.mqtt.commands import CommandError, parse_say
from sensorium.bridges.mqtt.topics import Topics, slug
from sensorium.pipeline.bus import Endpoints
from sensorium.pipeline.client import Client
from sensorium.pipeline.clock import Clock
from sensorium.pipeline.codec import to_json
from sensorium.pipeline.config import MqttConfig
from sensorium.pipeline.messages import Event, EventsLost, InputError, Presence, Transcript
from sensorium.pipeline.security import CurveKeys

log = logging.getLogger("sensorium.mqtt")

#: CONNACK codes that mean "these credentials are not accepted" (MQTT 3.1.1 and 5).
_REFUSED = {4, 5, 134, 135}
BACKOFF_MAX = 30.0
PEOPLE_EVERY = 10.0
"""Seconds between reads of the enrolled people (a person removed from the gallery loses their entities)."""


def credentials_refused(exc: aiomqtt.MqttError) -> bool:
    """True when the broker's CONNACK refused the user or password (retrying cannot help).

    Only a ``MqttConnectError`` says so: a publish on a lost connection raises a plain
    ``MqttCodeError`` whose code 4 (paho's "not connected") reads like CONNACK's 4.
    """
    return isinstance(exc, MqttConnectError) and int(getattr(exc.rc, "value", exc.rc) or 0) in _REFUSED


class BridgeError(RuntimeError):
    """The bridge cannot run (credentials refused, password file unreadable …); the text says what and where."""


@dataclass
class BridgeStats:
    """What the bridge did, for logs, tests and the benchmark."""

    events: int = 0
    """Hub events handled."""
    states: int = 0
    """Retained state messages published."""
    forwarded: int = 0
    """Event messages published."""
    commands: int = 0
    """Commands passed to the hub."""
    errors: int = 0
    """Commands refused."""
    connects: int = 0
    """Successful broker connections."""


class Bridge:
    """One site's bridge between a hub and an MQTT broker."""

    def __init__(
        self,
        config: MqttConfig,
        rooms: Iterable[str],
        hub: str | Endpoints,
        *,
        data_dir: str | Path,
        people: Callable[[], Iterable[str]] | None = None,
        curve: CurveKeys | None = None,
        heartbeat: float = 0.5,
        clock: Clock | None = None,
        name: str = "",
    ) -> None:
        self.cfg = config
        self.topics = Topics(config.base_topic, config.site, config.discovery_prefix)
        self.rooms = list(rooms)
        self._room_by_slug: dict[str, str] = {}
        for room in self.rooms:
            s = slug(room)
            if not s or s in self._room_by_slug:
                raise BridgeError(f"room {room!r} has no usable topic name (its slug {s!r} is empty or taken)")
            self._room_by_slug[s] = room
        self.hub = hub
        self.curve = curve
        self.heartbeat = heartbeat
        self.clock = clock
        self.name = name or f"mqtt-{config.site}"
        self.state_path = Path(data_dir) / f"mqtt-{config.site}.json"
        self._people_source = people or (lambda: list(config.people))
        self.refresh = float(config.refresh)
        self.expire_after = math.ceil(3 * self.refresh) if self.refresh > 0 else 0
        self.client_id = config.client_id or f"sensorium-{config.site}"
        self.stats = BridgeStats()
        self.house: state.House | None = None
        self.client: Client | None = None
        self.people: list[str] = []
        """Enrolled people with entities, sorted."""
        self._person_by_slug: dict[str, str] = {}
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=1000)
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._unsaved = False
        self._published: dict[str, bytes] = {}
        self._state_lock = asyncio.Lock()
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._people_changed = asyncio.Event()
        self._recheck_people = asyncio.Event()
        self._hub_online = False
        self._first_read: int | None = None
        self._last_refresh = 0.0
        self.connected = asyncio.Event()
        """Set while connected to the broker."""

    # ---------------------------------------------------------------------------------- lifecycle

    def stop(self) -> None:
        """Ask for a clean stop: finish the current event, publish ``offline``, disconnect."""
        self._stop.set()

    async def run(self) -> None:
        """Run until ``stop()``; ``BridgeError`` when it cannot (refused credentials, bad password file)."""
        password = self._password()
        async with Client(self.hub, name=self.name, curve=self.curve, clock=self.clock, heartbeat=self.heartbeat) as c:
            self.client = c
            await self._load_people()
            background = [
                asyncio.create_task(self._prepare(c), name="mqtt-prepare"),
                asyncio.create_task(self._watch_people(), name="mqtt-people"),
            ]
            try:
                await self._broker_loop(password)
            finally:
                for t in background:
                    t.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                if self._unsaved:
                    await self._save()

    async def remove(self, wait: float = 1.0) -> list[str]:
        """Delete everything this site keeps on the broker (discovery configs, states, availability) and
        the state file: Home Assistant drops the devices and entities. Returns the topics cleared."""
        found: list[str] = []
        async with self._mqtt(self._password()) as mq:
            await mq.subscribe(f"{self.topics.discovery_prefix}/+/{self.topics.node_id}/+/config", qos=1)
            await mq.subscribe(f"{self.topics.root}/#", qos=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # the broker sends its retained messages at once
                    async for msg in mq.messages:
                        if msg.retain and msg.payload:
                            found.append(str(msg.topic))
            for topic in sorted(set(found)):
                await mq.publish(topic, b"", qos=1, retain=True)
        self.state_path.unlink(missing_ok=True)
        log.info("removed %d retained topics of site %s and %s", len(found), self.cfg.site, self.state_path)
        return sorted(set(found))

    def _password(self) -> str | None:
        if not self.cfg.password_file:
            return None
        path = Path(self.cfg.password_file).expanduser()
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise BridgeError(f"[mqtt] password_file {path}: {exc.strerror or exc}") from None
        if not lines or not lines[0]:
            raise BridgeError(f"[mqtt] password_file {path}: the first line (the password) is empty")
        return lines[0]

    # -------------------------------------------------------------------------------- hub side

    async def _prepare(self, client: Client) -> None:
        """The state to start from, then the event stream into the queue (for as long as the bridge runs)."""
        try:
            saved = state.load(self.state_path)
        except state.StateFileError as exc:
            log.warning("%s; starting from the hub's presence snapshot", exc)
            saved = None
        self.house = state.House(self.rooms, saved)
        if saved is not None and saved.seq > 0:
            log.info("resuming after hub event %d (%s)", saved.seq, self.state_path)
            self._ready.set()
            await self._read(client, saved.seq)
            return
        # A first start: the stream begins at the hub's newest event, and only then is the snapshot taken,
        # so nothing falls between the two (what both hold is applied twice, which changes nothing).
        reader = asyncio.create_task(self._read(client, None), name="mqtt-events")
        try:
            await self._stream_started(client, reader)
            # where the stream began: before the first event it queued (the reader may be ahead already)
            start = self._first_read - 1 if self._first_read is not None else client.last_seq
            await self._rebase(client)
            self.house.seq = max(self.house.seq, start)  # a restart from here resumes the stream where it began
            self._unsaved = True
            self._ready.set()
            await reader
        finally:
            reader.cancel()

    async def _read(self, client: Client, since: int | None) -> None:
        while True:
            try:
                async for ev in client.events(state.EVENT_TYPES, since=since):
                    if self._first_read is None:
                        self._first_read = ev.seq
                    await self._queue.put(ev)
                    since = ev.seq
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # hub gone or restarting: resume from the last event taken
                if since is None and client.last_seq:
                    since = client.last_seq
                log.warning("hub event stream interrupted (%s); resuming after event %s", exc, since)
                await asyncio.sleep(1.0)

    @staticmethod
    async def _stream_started(client: Client, reader: asyncio.Task[None]) -> None:
        """Wait until ``client.events`` has asked the hub for its newest event (``last_seq`` is set then;
        an empty log stays at 0, and then the stream replays everything from the first event anyway)."""
        answering_since = 0.0
        while client.last_seq == 0 and not reader.done():
            if client.link.connected:
                answering_since = answering_since or time.monotonic()
                if time.monotonic() - answering_since > 1.0:
                    return
            else:
                answering_since = 0.0
            await asyncio.sleep(0.05)

    async def _rebase(self, client: Client) -> None:
        """Who is where, from the hub's presence snapshot (retried until the hub answers)."""
        assert self.house is not None
        while True:
            if await client.wait_connected(10.0):
                try:
                    snapshot = await client.snapshot()
                    break
                except Exception as exc:
                    log.warning("hub did not answer the presence snapshot (%s); retrying", exc)
            else:
                log.warning("hub at %s is not answering; waiting for it to start", client.endpoints.control)
        self.house.rebase(snapshot)
        log.info("took %d people and counts from the hub's presence snapshot", len(snapshot))

    async def _load_people(self) -> None:
        try:
            names = [str(n) for n in await asyncio.to_thread(self._people_source)]
        except Exception as exc:  # a gallery being written or moved: keep the last list
            log.warning("could not read the enrolled people (%s); keeping %d", exc, len(self.people))
            return
        by_slug: dict[str, str] = {}
        for name in sorted(set(names)):
            s = slug(name)
            if not s or s in by_slug:
                log.error("person %r has no usable topic name (slug %r empty or taken); no entities for them", name, s)
                continue
            by_slug[s] = name
        people = sorted(by_slug.values())
        if people != self.people:
            if self.people:
                log.info("enrolled people changed: %s", ", ".join(people) or "nobody")
            self.people, self._person_by_slug = people, by_slug
            self._people_changed.set()

    async def _watch_people(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PEOPLE_EVERY):
                    await self._recheck_people.wait()
            self._recheck_people.clear()
            await self._load_people()

    # ----------------------------------------------------------------------------- broker side

    def _mqtt(self, password: str | None) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.cfg.host,
            self.cfg.port,
            username=self.cfg.username or None,
            password=password,
            identifier=self.client_id,
            keepalive=self.cfg.keepalive,
            will=aiomqtt.Will(self.topics.status, b"offline", qos=1, retain=True),
            tls_params=aiomqtt.TLSParameters(ca_certs=self.cfg.ca_file or None) if self.cfg.tls else None,
            logger=logging.getLogger("sensorium.mqtt.paho"),
        )

    async def _broker_loop(self, password: str | None) -> None:
        where = f"{self.cfg.host}:{self.cfg.port}"
        backoff = 1.0
        while not self._stop.is_set():
            try:
                async with self._mqtt(password) as mq:
                    backoff = 1.0
                    self.stats.connects += 1
                    log.info("connected to the broker at %s as %s", where, self.client_id)
                    await self._session(mq)
                    with contextlib.suppress(aiomqtt.MqttError):
                        await mq.publish(self.topics.status, b"offline", qos=1, retain=True)
                    log.info("stopped: published offline on %s", self.topics.status)
                    return
            except aiomqtt.MqttError as exc:
                if credentials_refused(exc):
                    user = self.cfg.username or "(anonymous)"
                    raise BridgeError(f"broker {where} refused user {user}: {exc}") from None
                log.warning("broker %s unreachable or gone (%s); reconnecting in %.0f s", where, exc, backoff)
            finally:
                self.connected.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self._stop.wait()
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _session(self, mq: aiomqtt.Client) -> None:
        """One broker connection: everything again, then the three loops until stop or a disconnect."""
        self._published.clear()  # a new connection publishes every state, which is also a refresh
        self._last_refresh = time.monotonic()
        self._hub_online = self._hub_connected()
        await self._publish_status(mq)
        await mq.subscribe(self.topics.ha_status, qos=1)
        for topic in self.topics.command_filters():
            await mq.subscribe(topic, qos=1)
        self._people_changed.clear()
        await self._announce(mq)
        self.connected.set()
        pump = asyncio.create_task(self._pump(mq), name="mqtt-pump")
        loops = [
            asyncio.create_task(self._watch_hub(mq), name="mqtt-hub-watch"),
            asyncio.create_task(self._messages(mq), name="mqtt-messages"),
            asyncio.create_task(self._announcer(mq), name="mqtt-announcer"),
        ]
        stopper = asyncio.create_task(self._stop.wait(), name="mqtt-stop")
        tasks = [pump, stopper, *loops]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stopper and not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            if stopper in done:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10.0):
                        await pump  # the pump finishes the event in hand, then returns
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _hub_connected(self) -> bool:
        return self.client is not None and self.client.link.connected

    async def _publish_status(self, mq: aiomqtt.Client) -> None:
        await mq.publish(self.topics.status, b"online" if self._hub_online else b"offline", qos=1, retain=True)

    async def _watch_hub(self, mq: aiomqtt.Client) -> None:
        """Availability follows the hub: ``offline`` once it misses heartbeats, ``online`` when it answers again."""
        while True:
            online = self._hub_connected()
            if online != self._hub_online:
                self._hub_online = online
                what = "answers again: availability online" if online else "stopped answering: availability offline"
                log.warning("hub %s", what)
                await self._publish_status(mq)
            await asyncio.sleep(0.1)

    async def _announcer(self, mq: aiomqtt.Client) -> None:
        while True:
            await self._people_changed.wait()
            self._people_changed.clear()
            await self._announce(mq)

    async def _announce(self, mq: aiomqtt.Client) -> None:
        """Discovery configs of every room and enrolled person; cleared for people no longer enrolled."""
        for room in self.rooms:
            for topic, config in discovery.room_configs(self.topics, room, self.expire_after).items():
                await mq.publish(topic, discovery.payload(config), qos=1, retain=True)
        for person in self.people:
            for topic, config in discovery.person_configs(self.topics, person, self.expire_after).items():
                await mq.publish(topic, discovery.payload(config), qos=1, retain=True)
        if self.house is None:
            return
        gone = [p for p in self.house.announced if p not in self.people]
        async with self._state_lock:
            for person in gone:
                log.info("%s is no longer enrolled: clearing their Home Assistant entities", person)
                topics = [
                    *discovery.person_configs(self.topics, person, 0),
                    *state.person_state_topics(self.topics, person),
                ]
                for topic in topics:
                    await mq.publish(topic, b"", qos=1, retain=True)  # an empty retained message deletes it
                    self._published.pop(topic, None)
        if gone or self.house.announced != self.people:
            self.house.announced = list(self.people)
            self._unsaved = True
        if self._ready.is_set():
            await self._sync_states(mq)

    async def _sync_states(self, mq: aiomqtt.Client, everything: bool = False) -> None:
        """Publish the retained states that differ from what this connection last published (or all)."""
        assert self.house is not None
        async with self._state_lock:
            for topic, payload in state.retained(self.house, self.topics, self.people).items():
                if everything or self._published.get(topic) != payload:
                    await mq.publish(topic, payload, qos=1, retain=True)
                    self._published[topic] = payload
                    self.stats.states += 1

    async def _pump(self, mq: aiomqtt.Client) -> None:
        """Events from the queue into states and messages, in hub order; the state file after each."""
        while not self._ready.is_set():  # a first start waits for the hub's snapshot
            if self._stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self._ready.wait()
        await self._sync_states(mq)
        while True:
            while self._outbox:  # what an earlier connection could not deliver goes first
                topic, payload = self._outbox[0]
                await mq.publish(topic, payload, qos=1)
                self._outbox.popleft()
                self.stats.forwarded += 1
            if self._unsaved:
                await self._save()
            await self._maybe_refresh(mq)
            if self._stop.is_set():
                return
            try:
                async with asyncio.timeout(1.0):
                    ev = await self._queue.get()
            except TimeoutError:
                continue
            if isinstance(ev, EventsLost):
                await self._lost(ev)
            else:
                self._handle(ev)
            await self._sync_states(mq)

    async def _lost(self, ev: EventsLost) -> None:
        """The hub's log no longer held events the states depend on: start over from its snapshot."""
        assert self.house is not None and self.client is not None
        log.warning("hub events %d..%d were lost (the bridge was away longer than the hub's log holds); "
                    "taking the states from the hub's presence snapshot", ev.first_seq, ev.last_seq)  # fmt: skip
        await self._rebase(self.client)
        self.house.seq = max(self.house.seq, ev.seq)
        self._unsaved = True

    def _handle(self, ev: Event) -> None:
        assert self.house is not None
        self.stats.events += 1
        if isinstance(ev, Transcript) and not ev.final:
            return  # partials change no state and are not forwarded
        if isinstance(ev, Presence) and ev.person not in ("unknown", "") and ev.person not in self.people:
            self._recheck_people.set()  # enrolled since the last look?
        self.house.apply(ev)
        self._outbox.extend(state.forwarded(ev, self.topics))
        self._unsaved = True

    async def _maybe_refresh(self, mq: aiomqtt.Client) -> None:
        # Refreshing only while the hub answers is what lets expire_after mark stale values in HA.
        if self.refresh <= 0 or not self._hub_connected():
            return
        now = time.monotonic()
        if now - self._last_refresh >= self.refresh:
            self._last_refresh = now
            await self._sync_states(mq, everything=True)

    async def _save(self) -> None:
        assert self.house is not None
        self._unsaved = False
        data = msgspec.json.encode(self.house.saved())
        await asyncio.to_thread(state.save_bytes, self.state_path, data)

    # ------------------------------------------------------------------------------- commands

    async def _messages(self, mq: aiomqtt.Client) -> None:
        async for msg in mq.messages:
            topic = str(msg.topic)
            payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload or "").encode()
            if topic == self.topics.ha_status:
                if payload == b"online":
                    log.info("Home Assistant came online: sending discovery again")
                    await self._announce(mq)
                continue
            verb = self.topics.command(topic)
            if verb is None:
                continue
            try:
                await self._command(verb[0], verb[1], payload, bool(msg.retain))
                self.stats.commands += 1
            except CommandError as exc:
                await self._refuse(mq, topic, verb, str(exc))

    async def _command(self, verb: str, target: str, payload: bytes, retained: bool) -> None:
        assert self.client is not None
        if retained:
            raise CommandError(
                "retained commands are ignored (one would repeat on every reconnect): publish without retain"
            )
        if verb in ("say", "stop"):
            room = self._room_by_slug.get(target)
            if room is None:
                raise CommandError(f"unknown room {target!r} (known: {', '.join(self._room_by_slug)})")
            if verb == "stop":
                await self.client.stop(room, reason="mqtt")
                log.info("stop playback in %s", room)
                return
            say = parse_say(payload, self.cfg.max_command)
            if say.person and say.person not in self.people:
                raise CommandError(f"unknown person {say.person!r} (enrolled: {', '.join(self.people) or 'nobody'})")
            await self.client.say(room, say.text, voice=say.voice, person=say.person)
            log.info("say in %s: %r", room, say.text)
            return
        person = self._person_by_slug.get(target)
        if person is None:
            raise CommandError(f"unknown person {target!r} (enrolled: {', '.join(self._person_by_slug) or 'nobody'})")
        say = parse_say(payload, self.cfg.max_command)
        if say.person and say.person != person:
            raise CommandError(f"the topic names {person!r} but the payload's person is {say.person!r}")
        assert self.house is not None
        room = self.house.where(person)
        if not room:
            raise CommandError(f"{person} is not in any room now")
        await self.client.say(room, say.text, voice=say.voice, person=person)
        log.info("say to %s in %s: %r", person, room, say.text)

    async def _refuse(self, mq: aiomqtt.Client, topic: str, verb: tuple[str, str], reason: str) -> None:
        self.stats.errors += 1
        room = self._room_by_slug.get(verb[1], "") if verb[0] != "say_person" else ""
        log.warning("refused command on %s: %s", topic, reason)
        err = InputError(
            time=self.client.clock.now() if self.client else 0.0,
            room=room,
            source=self.name,
            stage="mqtt",
            input_topic=topic,
            reason=reason,
        )
        await mq.publish(self.topics.event("error", room), to_json(err), qos=1)


def run_bridge(bridge: Bridge, install_signals: bool = True) -> Any:
    """Run ``bridge`` in a new event loop; SIGINT/SIGTERM stop it cleanly."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if install_signals:
            import signal

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, bridge.stop)
        await bridge.run()

    return asyncio.run(main())
