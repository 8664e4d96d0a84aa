"""The MQTT bridge against a real mosquitto and a real hub: states, discovery, events, commands, faults.

Events enter the way stages publish them (a ``Publisher`` on the hub's bus, sequenced by the hub's
log); an ``Observer`` subscribed to everything on the broker reads what a Home Assistant would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from mosquitto import Mosquitto, make_tls, retained

from sensorium.bridges.mqtt.bridge import Bridge, BridgeError
from sensorium.pipeline.bus import Publisher, Subscriber
from sensorium.pipeline.config import HubConfig, MqttConfig
from sensorium.pipeline.hub import Hub
from sensorium.pipeline.messages import Presence, Say, SpeakerIdentified, StopPlayback, Transcript, WakeDetected

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ROOMS = ["kitchen", "living_room"]
S = "sensorium/home"


@dataclass
class Observer:
    """Everything published on the broker, with arrival times; reconnects when the broker restarts."""

    port: int
    messages: list[tuple[float, str, bytes]] = field(default_factory=list)
    latest: dict[str, bytes] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier=f"observer-{os.getpid()}") as c:
                    await c.subscribe("#", qos=1)
                    async for m in c.messages:
                        payload = m.payload if isinstance(m.payload, bytes) else str(m.payload or "").encode()
                        self.messages.append((time.monotonic(), str(m.topic), payload))
                        self.latest[str(m.topic)] = payload
                        self.changed.set()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)

    async def wait(self, test: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not test():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what or 'the broker'}; latest: {self._show()}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.2))

    async def wait_for(self, topic: str, payload: bytes | str, timeout: float = 10.0) -> None:
        want = payload.encode() if isinstance(payload, str) else payload
        await self.wait(lambda: self.latest.get(topic) == want, timeout, f"{topic} = {want!r}")

    def on(self, topic: str) -> list[bytes]:
        return [p for _, t, p in self.messages if t == topic]

    def _show(self) -> str:
        return json.dumps({t: p.decode(errors="replace")[:80] for t, p in self.latest.items() if t.startswith(S)})


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "mqtt")
    b.start()
    yield b
    b.stop()


@pytest.fixture
async def observer(broker: Mosquitto) -> AsyncIterator[Observer]:
    obs = Observer(broker.port)
    obs.task = asyncio.create_task(obs.run())
    await asyncio.sleep(0.2)
    yield obs
    obs.task.cancel()
    await asyncio.gather(obs.task, return_exceptions=True)


@pytest.fixture
async def pub(hub: Hub) -> AsyncIterator[Publisher]:
    p = Publisher(hub.endpoints)
    await asyncio.sleep(0.2)
    yield p
    p.close()


def config(broker: Mosquitto, **changes: Any) -> MqttConfig:
    return MqttConfig(host="127.0.0.1", port=broker.port, people=changes.pop("people", ["alice", "bob"]), **changes)


@contextlib.asynccontextmanager
async def running(bridge: Bridge) -> AsyncIterator[Bridge]:
    task = asyncio.create_task(bridge.run())
    try:
        async with asyncio.timeout(15):
            while not bridge.connected.is_set():
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # the hub event stream subscribes
        yield bridge
    finally:
        bridge.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), 15)
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def make_bridge(hub: Hub, broker: Mosquitto, tmp_path: Path, **changes: Any) -> Bridge:
    people = changes.pop("people_source", None)
    return Bridge(
        config(broker, **changes),
        ROOMS,
        hub.endpoints,
        data_dir=tmp_path / "data",
        people=people,
        heartbeat=0.1,
        clock=hub.clock,
    )


def presence(hub: Hub, person: str, room: str, state: str = "entered", unknown: int = 0) -> Presence:
    return Presence(
        time=hub.clock.now(), room=room, source="presence", person=person, state=state, unknown=unknown,  # type: ignore[arg-type]
        confidence=0.9 if state != "left" else 0.0, sources=["face"],
    )  # fmt: skip


# ------------------------------------------------------------------------------------ states


async def test_presence_becomes_retained_states_and_discovery(
    hub: Hub, broker: Mosquitto, observer: Observer, pub: Publisher, tmp_path: Path
) -> None:
    async with running(make_bridge(hub, broker, tmp_path)):
        await observer.wait_for(f"{S}/status", "online")
        await observer.wait_for(f"{S}/room/kitchen/occupancy", "OFF")
        await observer.wait_for(f"{S}/person/alice/home", "not_home")
        await pub.publish(presence(hub, "alice", "kitchen"))
        await pub.publish(presence(hub, "unknown", "kitchen", unknown=1))
        await observer.wait_for(f"{S}/room/kitchen/people", "2")
        assert observer.latest[f"{S}/room/kitchen/occupancy"] == b"ON"
        attrs = json.loads(observer.latest[f"{S}/room/kitchen/people/attributes"])
        assert attrs == {"names": ["alice"], "unknown": 1}
        await observer.wait_for(f"{S}/person/alice/room", "kitchen")
        assert observer.latest[f"{S}/person/alice/home"] == b"home"
        assert observer.latest[f"{S}/person/bob/room"] == b"not_home"
        # alice moves: left the kitchen, entered the living room
        await pub.publish(presence(hub, "alice", "kitchen", "left", unknown=1))
        await pub.publish(presence(hub, "alice", "living_room"))
        await observer.wait_for(f"{S}/person/alice/room", "living_room")
        await observer.wait_for(f"{S}/room/kitchen/people", "1")
        assert observer.latest[f"{S}/room/living_room/occupancy"] == b"ON"
        # published on change only: one "ON" for the kitchen although three events touched it
        assert observer.on(f"{S}/room/kitchen/occupancy") == [b"OFF", b"ON"]
        held = await retained(broker.port)
    assert held[f"{S}/person/alice/room"] == b"living_room"
    # stopped cleanly: offline, retained
    assert (await retained(broker.port, f"{S}/status"))[f"{S}/status"] == b"offline"
    occupancy = json.loads(held["homeassistant/binary_sensor/sensorium_home/kitchen_occupancy/config"])
    assert occupancy["device_class"] == "occupancy"
    assert occupancy["state_topic"] == f"{S}/room/kitchen/occupancy"
    assert occupancy["availability_topic"] == f"{S}/status"
    assert occupancy["unique_id"] == "sensorium_home_kitchen_occupancy"
    assert occupancy["expire_after"] == 180  # 3 x the 60 s refresh
    assert occupancy["device"]["identifiers"] == ["sensorium_home_room_kitchen"]
    tracker = json.loads(held["homeassistant/device_tracker/sensorium_home/alice/config"])
    assert (tracker["payload_home"], tracker["payload_not_home"]) == ("home", "not_home")
    assert tracker["state_topic"] == f"{S}/person/alice/home"
    voice = json.loads(held["homeassistant/event/sensorium_home/kitchen_voice/config"])
    assert voice["event_types"] == ["wake", "transcript"]
    # states never live under the discovery prefix
    assert all(t.endswith("/config") for t in held if t.startswith("homeassistant/"))
    assert (tmp_path / "data/mqtt-home.json").stat().st_mode & 0o777 == 0o600


async def test_events_are_forwarded_and_speakers_become_last_speaker(
    hub: Hub, broker: Mosquitto, observer: Observer, pub: Publisher, tmp_path: Path
) -> None:
    async with running(make_bridge(hub, broker, tmp_path)):
        await pub.publish(
            WakeDetected(time=hub.clock.now(), room="kitchen", source="wake", word="hey_jarvis", score=0.9)
        )
        for text, final in (("turn on", False), ("turn on the lights", True)):
            await pub.publish(
                Transcript(
                    time=hub.clock.now(), room="kitchen", source="stt", utterance_id="u1", final=final, text=text
                )
            )
        await pub.publish(
            SpeakerIdentified(
                time=hub.clock.now(), room="kitchen", source="speaker", utterance_id="u1", person="bob", score=0.81
            )
        )
        await observer.wait_for(f"{S}/room/kitchen/last_speaker", "bob")
        attrs = json.loads(observer.latest[f"{S}/room/kitchen/last_speaker/attributes"])
        assert attrs["text"] == "turn on the lights" and attrs["score"] == 0.81
        await observer.wait(lambda: len(observer.on(f"{S}/events/speaker/kitchen")) == 1, what="the speaker event")
    transcripts = [json.loads(p) for p in observer.on(f"{S}/events/transcript/kitchen")]
    assert [t["text"] for t in transcripts] == ["turn on the lights"]  # finals only
    assert transcripts[0]["type"] == "transcript" and transcripts[0]["seq"] > 0
    assert json.loads(observer.on(f"{S}/events/wake/kitchen")[0])["word"] == "hey_jarvis"
    voice = [json.loads(p) for p in observer.on(f"{S}/room/kitchen/voice")]
    assert [v["event_type"] for v in voice] == ["wake", "transcript"]
    assert voice[1]["text"] == "turn on the lights"
    held = await retained(broker.port)
    assert not any("/events/" in t or t.endswith("/voice") for t in held), "events must not be retained"


async def test_restart_neither_repeats_nor_skips(
    hub: Hub, broker: Mosquitto, observer: Observer, pub: Publisher, tmp_path: Path
) -> None:
    async def wake(i: int) -> None:
        await pub.publish(WakeDetected(time=hub.clock.now(), room="kitchen", source="wake", word=f"w{i}", score=0.9))

    async with running(make_bridge(hub, broker, tmp_path)) as b:
        await observer.wait_for(f"{S}/person/bob/room", "not_home")  # the first states are out
        for i in range(10):
            await wake(i)
        await pub.publish(presence(hub, "bob", "kitchen"))
        await observer.wait_for(f"{S}/person/bob/room", "kitchen")
        await observer.wait(lambda: b.stats.forwarded >= 11, what="the first ten wakes")
    # the bridge is down: events keep coming and are logged by the hub
    for i in range(10, 20):
        await wake(i)
    await pub.publish(presence(hub, "bob", "kitchen", "left"))
    await asyncio.sleep(0.3)
    async with running(make_bridge(hub, broker, tmp_path)):
        for i in range(20, 25):
            await wake(i)
        await observer.wait_for(f"{S}/person/bob/room", "not_home")
        await observer.wait(lambda: len(observer.on(f"{S}/events/wake/kitchen")) >= 25, what="25 wakes")
        await asyncio.sleep(0.5)
    words = [json.loads(p)["word"] for p in observer.on(f"{S}/events/wake/kitchen")]
    assert words == [f"w{i}" for i in range(25)], words  # each once, in order, none skipped
    # a reconnect re-publishes the saved state (the same value again), then the change made meanwhile
    rooms = observer.on(f"{S}/person/bob/room")
    assert [p for i, p in enumerate(rooms) if i == 0 or rooms[i - 1] != p] == [b"not_home", b"kitchen", b"not_home"]


async def test_events_the_hub_no_longer_holds_are_replaced_by_its_snapshot(
    hub_address: str, broker: Mosquitto, observer: Observer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub = Hub(HubConfig(address=hub_address, heartbeat=0.1, down_after=0.5, event_log=20), state_dir=tmp_path / "hub")
    await hub.start()
    pub = Publisher(hub.endpoints)
    await asyncio.sleep(0.2)
    try:
        async with running(make_bridge(hub, broker, tmp_path)):
            await pub.publish(presence(hub, "alice", "kitchen"))
            await observer.wait_for(f"{S}/person/alice/room", "kitchen")
        # while the bridge is away, alice leaves, bob comes, and 40 wakes push both out of the 20-event log
        await pub.publish(presence(hub, "alice", "kitchen", "left"))
        await pub.publish(presence(hub, "bob", "living_room"))
        for i in range(40):
            await pub.publish(WakeDetected(time=hub.clock.now(), room="kitchen", source="wake", word=f"w{i}", score=1))
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.5)
        assert hub.log.first_seq > 3
        caplog.clear()
        caplog.set_level(logging.INFO, logger="sensorium.mqtt")
        async with running(make_bridge(hub, broker, tmp_path)):
            await observer.wait_for(f"{S}/person/bob/room", "living_room")
            await observer.wait_for(f"{S}/person/alice/room", "not_home")
            assert observer.latest[f"{S}/room/kitchen/occupancy"] == b"OFF"
        assert "resuming after hub event" in caplog.text and "were lost" in caplog.text
    finally:
        pub.close()
        await hub.stop()


async def test_broker_restart_mid_session_loses_nothing(
    hub: Hub, broker: Mosquitto, observer: Observer, pub: Publisher, tmp_path: Path
) -> None:
    async with running(make_bridge(hub, broker, tmp_path)) as b:
        await pub.publish(presence(hub, "alice", "kitchen"))
        await observer.wait_for(f"{S}/person/alice/room", "kitchen")
        for i in range(200):  # the broker goes while the bridge is busy publishing these
            await pub.publish(WakeDetected(time=hub.clock.now(), room="kitchen", source="wake", word=f"w{i}", score=1))
        await asyncio.sleep(0.05)
        broker.kill()  # retained messages are gone with it (no persistence)
        await pub.publish(presence(hub, "alice", "kitchen", "left"))
        await pub.publish(presence(hub, "alice", "living_room"))
        await pub.publish(WakeDetected(time=hub.clock.now(), room="living_room", source="wake", word="during", score=1))
        await asyncio.sleep(1.5)
        broker.start()
        await observer.wait_for(f"{S}/person/alice/room", "living_room", timeout=20)
        await observer.wait_for(f"{S}/status", "online")
        await observer.wait(
            lambda: len(observer.on(f"{S}/events/wake/living_room")) == 1, what="the wake sent meanwhile"
        )
        await observer.wait(lambda: len({*observer.on(f"{S}/events/wake/kitchen")}) == 200, what="all 200 wakes")
        words = [json.loads(p)["word"] for p in observer.on(f"{S}/events/wake/kitchen")]
        assert len(words) - len(set(words)) <= 1  # at most the one in flight when the broker went is sent twice
        held = await retained(broker.port)
        assert b.stats.connects == 2
    assert held[f"{S}/person/alice/room"] == b"living_room"
    assert held[f"{S}/person/bob/room"] == b"not_home"  # unchanged, and still re-published
    assert held[f"{S}/room/kitchen/occupancy"] == b"OFF"
    assert held[f"{S}/room/living_room/occupancy"] == b"ON"
    assert "homeassistant/sensor/sensorium_home/alice_room/config" in held  # discovery re-sent


async def test_broker_down_at_start_then_up(
    hub: Hub, tmp_path: Path, pub: Publisher, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Mosquitto(tmp_path / "late")  # not started yet
    bridge = make_bridge(hub, broker, tmp_path)
    task = asyncio.create_task(bridge.run())
    try:
        await pub.publish(presence(hub, "bob", "living_room"))
        await asyncio.sleep(2.0)
        assert f"broker 127.0.0.1:{broker.port} unreachable" in caplog.text
        assert not task.done()
        broker.start()
        obs = Observer(broker.port)
        obs.task = asyncio.create_task(obs.run())
        await obs.wait_for(f"{S}/person/bob/room", "living_room", timeout=20)
        await obs.wait_for(f"{S}/status", "online")
        obs.task.cancel()
    finally:
        bridge.stop()
        await asyncio.wait_for(task, 15)
        broker.stop()


async def test_hub_down_sends_offline_within_the_heartbeat_window(
    hub_address: str, broker: Mosquitto, observer: Observer, tmp_path: Path
) -> None:
    cfg = HubConfig(address=hub_address, heartbeat=0.1, down_after=0.5)
    hub = Hub(cfg, state_dir=tmp_path / "hub")
    await hub.start()
    async with running(make_bridge(hub, broker, tmp_path)):
        await observer.wait_for(f"{S}/status", "online")
        t0 = time.monotonic()
        await hub.stop()
        await observer.wait_for(f"{S}/status", "offline", timeout=5)
        window = time.monotonic() - t0
        assert window < 3 * 0.1 + 0.2 + 0.3, f"offline after {window:.2f} s"  # NodeLink's window + the bridge's poll
        hub = Hub(cfg, state_dir=tmp_path / "hub")
        await hub.start()
        await observer.wait_for(f"{S}/status", "online", timeout=10)
    await hub.stop()


async def test_hub_absent_at_the_first_start_then_there_then_a_prompt_stop(
    hub_address: str, broker: Mosquitto, observer: Observer, tmp_path: Path
) -> None:
    bridge = Bridge(config(broker), ROOMS, hub_address, data_dir=tmp_path / "data", heartbeat=0.1)
    task = asyncio.create_task(bridge.run())
    await observer.wait(lambda: "homeassistant/sensor/sensorium_home/alice_room/config" in observer.latest)
    assert observer.latest[f"{S}/status"] == b"offline"  # on the broker, but no hub to report for
    hub = Hub(HubConfig(address=hub_address, heartbeat=0.1, down_after=0.5), state_dir=tmp_path / "hub")
    await hub.start()
    try:
        await observer.wait_for(f"{S}/status", "online", timeout=20)
        await observer.wait_for(f"{S}/person/alice/room", "not_home")
        t0 = time.monotonic()
        bridge.stop()
        await asyncio.wait_for(task, 10)
        assert time.monotonic() - t0 < 3
        await observer.wait_for(f"{S}/status", "offline")
    finally:
        await hub.stop()


async def test_person_removed_from_the_gallery_loses_their_entities(
    hub: Hub, broker: Mosquitto, observer: Observer, tmp_path: Path
) -> None:
    enrolled = ["alice", "bob"]
    bridge = make_bridge(hub, broker, tmp_path, people=[], people_source=lambda: list(enrolled))
    async with running(bridge):
        await observer.wait_for(f"{S}/person/bob/home", "not_home")
        tracker = "homeassistant/device_tracker/sensorium_home/bob/config"
        assert tracker in await retained(broker.port)
        enrolled.remove("bob")
        bridge._recheck_people.set()
        await observer.wait_for(tracker, b"")
        await observer.wait_for(f"{S}/person/bob/home", b"")
        held = await retained(broker.port)
        assert not [t for t in held if "/bob" in t], "bob's discovery and states must be cleared"
        assert "homeassistant/device_tracker/sensorium_home/alice/config" in held
    # and a restart remembers that bob is gone (nothing to clear twice)
    assert json.loads((tmp_path / "data/mqtt-home.json").read_text())["announced"] == ["alice"]


async def test_home_assistant_birth_resends_discovery(
    hub: Hub, broker: Mosquitto, observer: Observer, tmp_path: Path
) -> None:
    topic = "homeassistant/binary_sensor/sensorium_home/kitchen_occupancy/config"
    async with running(make_bridge(hub, broker, tmp_path)):
        await observer.wait(lambda: len(observer.on(topic)) == 1, what="discovery")
        async with aiomqtt.Client("127.0.0.1", broker.port) as ha:
            await ha.publish("homeassistant/status", b"online")
        await observer.wait(lambda: len(observer.on(topic)) == 2, what="discovery again")


# ---------------------------------------------------------------------------------- commands


async def test_commands_reach_the_hub_and_bad_ones_are_refused(
    hub: Hub, broker: Mosquitto, observer: Observer, pub: Publisher, tmp_path: Path
) -> None:
    said = Subscriber(hub.endpoints, ["say/", "stop_playback/"])
    await asyncio.sleep(0.2)
    async with aiomqtt.Client("127.0.0.1", broker.port) as ha:
        # left retained on the broker: it would be spoken again on every reconnect, so it is refused
        await ha.publish(f"{S}/say/kitchen", b"stuck", retain=True, qos=1)
    async with running(make_bridge(hub, broker, tmp_path)), aiomqtt.Client("127.0.0.1", broker.port) as ha:
        await pub.publish(presence(hub, "alice", "living_room"))
        await observer.wait_for(f"{S}/person/alice/room", "living_room")
        await ha.publish(f"{S}/say/kitchen", b"dinner is ready")
        msg = await said.recv_timeout(5)
        assert isinstance(msg, Say) and (msg.room, msg.text) == ("kitchen", "dinner is ready")
        await ha.publish(f"{S}/say/kitchen", json.dumps({"text": "hi alice", "person": "alice", "voice": "flite:slt"}))
        msg = await said.recv_timeout(5)
        assert isinstance(msg, Say) and (msg.room, msg.person, msg.voice) == ("kitchen", "alice", "flite:slt")
        await ha.publish(f"{S}/say_person/alice", b"your tea is ready")
        msg = await said.recv_timeout(5)
        assert isinstance(msg, Say) and (msg.room, msg.person, msg.text) == (
            "living_room",
            "alice",
            "your tea is ready",
        )
        await ha.publish(f"{S}/stop/kitchen", b"")
        msg = await said.recv_timeout(5)
        assert isinstance(msg, StopPlayback) and msg.room == "kitchen"

        bad = [
            (f"{S}/say/garage", b"hello", "unknown room 'garage' (known: kitchen, living_room)"),
            (f"{S}/say/kitchen", b"x" * 2000, "payload is 2000 bytes, the limit is 1024"),
            (f"{S}/say/kitchen", b'{"text": "hi", "colour": "red"}', "unknown field `colour`"),
            (f"{S}/say/kitchen", b'{"text": ', "is not valid JSON"),
            (f"{S}/say/kitchen", b"\xff\xfe", "not UTF-8"),
            (f"{S}/say/kitchen", b"   ", "the text is empty"),
            (f"{S}/say_person/bob", b"hello", "bob is not in any room now"),
            (f"{S}/say_person/mallory", b"hello", "unknown person 'mallory'"),
        ]
        for topic, payload, _ in bad:
            await ha.publish(topic, payload)

        def errors() -> list[dict[str, Any]]:
            return [json.loads(p) for _, t, p in observer.messages if t.startswith(f"{S}/events/error/")]

        await observer.wait(lambda: len(errors()) == len(bad) + 1, what="one error per bad command")
        reasons = [e["reason"] for e in errors()]
        assert "retained commands are ignored" in reasons[0]
        for (topic, _, expected), got in zip(bad, reasons[1:], strict=True):
            assert expected in got, (topic, got)
        assert all(e["type"] == "error" and e["stage"] == "mqtt" for e in errors())
        assert errors()[1]["input_topic"] == f"{S}/say/garage"
        # still serving, and nothing reached the hub for the bad ones
        await ha.publish(f"{S}/say/living_room", b"still here")
        msg = await said.recv_timeout(5)
        assert isinstance(msg, Say) and msg.text == "still here"
    said.close()


async def test_acl_lets_only_home_assistant_command(hub: Hub, tmp_path: Path) -> None:
    from test_mqtt_docs import acl_block

    acl = acl_block() + "\nuser guest\ntopic read sensorium/#\n"  # the guide's ACL, and a guest who may only read
    users = {"sensorium": "bridge-pw", "homeassistant": "ha-pw", "guest": "guest-pw"}
    broker = Mosquitto(tmp_path / "acl", users=users, acl=acl).start()
    pw = tmp_path / "mqtt-password"
    pw.write_text("bridge-pw\n")
    said = Subscriber(hub.endpoints, ["say/"])
    await asyncio.sleep(0.2)
    try:
        bridge = make_bridge(hub, broker, tmp_path, username="sensorium", password_file=str(pw))
        async with running(bridge):
            async with aiomqtt.Client("127.0.0.1", broker.port, username="guest", password="guest-pw") as guest:
                await guest.publish(f"{S}/say/kitchen", b"from the guest", qos=1)
            async with aiomqtt.Client("127.0.0.1", broker.port, username="homeassistant", password="ha-pw") as ha:
                await ha.publish(f"{S}/say/kitchen", b"from home assistant", qos=1)
            msg = await said.recv_timeout(5)
            assert isinstance(msg, Say) and msg.text == "from home assistant"  # the guest's never arrived
            assert await said.recv_timeout(0.5) is None
    finally:
        said.close()
        broker.stop()


async def test_tls_with_a_ca_file(hub: Hub, tmp_path: Path, pub: Publisher) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (apt-get install openssl)")
    ca, cert, key = make_tls(tmp_path / "tls")
    broker = Mosquitto(tmp_path / "mqtt-tls", tls=(ca, cert, key)).start()
    try:
        async with running(make_bridge(hub, broker, tmp_path, tls=True, ca_file=str(ca))):
            await pub.publish(presence(hub, "bob", "kitchen"))
            tls = aiomqtt.TLSParameters(ca_certs=str(ca))
            async with aiomqtt.Client("127.0.0.1", broker.port, tls_params=tls) as c:
                await c.subscribe(f"{S}/person/bob/room")
                async with asyncio.timeout(10):
                    async for m in c.messages:
                        if m.payload == b"kitchen":
                            break
        # without the CA the broker's certificate is refused: retried, never trusted
        other = make_tls(tmp_path / "other")[0]
        bridge = make_bridge(hub, broker, tmp_path, tls=True, ca_file=str(other))
        task = asyncio.create_task(bridge.run())
        await asyncio.sleep(2.0)
        assert not bridge.connected.is_set() and not task.done()
        bridge.stop()
        await asyncio.wait_for(task, 15)
    finally:
        broker.stop()


# ------------------------------------------------------------------------------------- faults


def _deploy(tmp_path: Path, broker: Mosquitto, hub_address: str, **mqtt: str) -> Path:
    table = "".join(f'{k} = "{v}"\n' for k, v in mqtt.items())
    path = tmp_path / "deploy.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[hub]\naddress = "{hub_address}"\n'
        '[rooms.kitchen]\n[edges.kitchen-pi]\nroom = "kitchen"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\npeople = ["alice"]\n{table}'
    )
    return path


def test_wrong_credentials_exit_non_zero_naming_broker_and_user(tmp_path: Path, hub_address: str) -> None:
    broker = Mosquitto(tmp_path / "auth", users={"sensorium": "right"}).start()
    try:
        pw = tmp_path / "pw"
        pw.write_text("wrong\n")
        path = _deploy(tmp_path, broker, hub_address, username="sensorium", password_file=str(pw))
        r = subprocess.run(
            [sys.executable, "-m", "sensorium", "mqtt", "--config", str(path)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"broker 127.0.0.1:{broker.port} refused user sensorium" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        # a missing password file is named, not a traceback
        path = _deploy(tmp_path, broker, hub_address, username="sensorium", password_file=str(tmp_path / "nope"))
        r = subprocess.run(
            [sys.executable, "-m", "sensorium", "mqtt", "--config", str(path)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 1 and f"[mqtt] password_file {tmp_path / 'nope'}: No such file" in r.stderr, r.stderr
    finally:
        broker.stop()


async def test_remove_clears_everything_of_the_site(
    hub: Hub, broker: Mosquitto, pub: Publisher, tmp_path: Path, hub_address: str
) -> None:
    async with running(make_bridge(hub, broker, tmp_path)):
        await pub.publish(presence(hub, "alice", "kitchen"))
        await asyncio.sleep(0.5)
    async with aiomqtt.Client("127.0.0.1", broker.port) as other:  # another site's and another app's topics
        await other.publish("sensorium/cabin/status", b"online", retain=True, qos=1)
        await other.publish("homeassistant/sensor/frigate/x/config", b"{}", retain=True, qos=1)
    before = await retained(broker.port)
    assert len([t for t in before if "sensorium_home" in t or t.startswith(S)]) > 20
    path = _deploy(tmp_path, broker, hub_address)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sensorium", "mqtt", "--config", str(path), "--state", str(tmp_path / "data"), "--remove",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert "cleared" in out.decode()
    after = await retained(broker.port)
    assert not [t for t in after if "sensorium_home" in t or t.startswith(S)], after
    assert set(after) == {"sensorium/cabin/status", "homeassistant/sensor/frigate/x/config"}
    assert not (tmp_path / "data/mqtt-home.json").exists()


def test_cli_without_mqtt_table_says_so(tmp_path: Path) -> None:
    path = tmp_path / "deploy.toml"
    path.write_text('[rooms.kitchen]\n[edges.kitchen-pi]\nroom = "kitchen"\n')
    r = subprocess.run(
        [sys.executable, "-m", "sensorium", "mqtt", "--config", str(path)], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 2 and "no [mqtt] table" in r.stderr, r.stderr


def test_bad_room_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BridgeError, match="room 'Kitchen!' has no usable topic name"):
        Bridge(MqttConfig(), ["kitchen", "Kitchen!"], "ipc:///tmp/x", data_dir=tmp_path)
