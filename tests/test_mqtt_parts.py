"""The MQTT bridge's pure parts, without a broker: the house state, topics, commands, config, state file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from sensorium.bridges.mqtt import state
from sensorium.bridges.mqtt.bridge import credentials_refused
from sensorium.bridges.mqtt.commands import CommandError, parse_say
from sensorium.bridges.mqtt.discovery import person_configs, room_configs
from sensorium.bridges.mqtt.state import House
from sensorium.bridges.mqtt.topics import Topics, slug
from sensorium.pipeline.config import ConfigError, from_dict
from sensorium.pipeline.messages import Presence, SpeakerIdentified, Transcript

ROOMS = ["kitchen", "living_room"]
TOPICS = Topics("sensorium", "home", "homeassistant")
PEOPLE = ["alice", "bob", "carol"]

presence_events = st.lists(
    st.builds(
        lambda person, room, state_: (person, room, state_),
        st.sampled_from(PEOPLE),
        st.sampled_from([*ROOMS, "garage"]),  # a room the bridge was not configured with, too
        st.sampled_from(["entered", "present", "left"]),
    ),
    max_size=30,
)


def _events(spec: list[tuple[str, str, str]]) -> list[Presence]:
    return [
        Presence(seq=i + 1, time=1000.0 + i, room=room, person=person, state=s)  # type: ignore[arg-type]
        for i, (person, room, s) in enumerate(spec)
    ]


def _rooms(house: House) -> dict[str, str]:
    return {p: house.where(p) for p in PEOPLE}


def _hub_snapshot(events: list[Presence]) -> list[Presence]:
    """What the hub's presence snapshot holds after ``events`` (its own bookkeeping, pipeline/hub.py)."""
    snap: dict[tuple[str, str], Presence] = {}
    for ev in events:
        if ev.state == "left":
            snap.pop((ev.person, ev.room), None)
        else:
            for key in [k for k in snap if k[0] == ev.person]:
                del snap[key]
            snap[(ev.person, ev.room)] = ev
    return list(snap.values())


@given(presence_events, st.data())
def test_replaying_events_already_applied_changes_nothing(
    spec: list[tuple[str, str, str]], data: st.DataObject
) -> None:
    # A resumed stream may hand back events the state already holds (after a snapshot): that must be harmless.
    events = _events(spec)
    house = House(ROOMS)
    for ev in events:
        house.apply(ev)
    before = _rooms(house)
    k = data.draw(st.integers(0, len(events)))
    for ev in events[k:]:
        house.apply(ev)
    assert _rooms(house) == before


@given(presence_events, st.data())
def test_snapshot_then_the_rest_equals_seeing_everything(spec: list[tuple[str, str, str]], data: st.DataObject) -> None:
    events = _events(spec)
    k = data.draw(st.integers(0, len(events)))
    everything = House(ROOMS)
    for ev in events:
        everything.apply(ev)
    late = House(ROOMS)
    snapshot = _hub_snapshot(events[:k])
    late.rebase(snapshot)
    since = max((p.seq for p in snapshot), default=0)
    for ev in events[since:]:  # the bridge resumes after the snapshot's newest entry
        late.apply(ev)
    assert _rooms(late) == _rooms(everything)


def test_a_move_is_left_then_entered_and_counts_follow() -> None:
    house = House(ROOMS)
    house.apply(Presence(seq=1, room="kitchen", person="alice", state="entered"))
    house.apply(Presence(seq=2, room="kitchen", person="unknown", state="entered", unknown=2))
    assert (house.count("kitchen"), house.names("kitchen")) == (3, ["alice"])
    house.apply(Presence(seq=3, room="kitchen", person="alice", state="left", unknown=2))
    house.apply(Presence(seq=4, room="living_room", person="alice", state="entered"))
    house.apply(Presence(seq=5, room="kitchen", person="unknown", state="left", unknown=0))
    assert house.where("alice") == "living_room"
    out = state.retained(house, TOPICS, ["alice", "bob"])
    assert out["sensorium/home/room/kitchen/occupancy"] == b"OFF"
    assert out["sensorium/home/room/living_room/occupancy"] == b"ON"
    assert out["sensorium/home/room/living_room/people"] == b"1"
    assert json.loads(out["sensorium/home/room/living_room/people/attributes"]) == {"names": ["alice"], "unknown": 0}
    assert out["sensorium/home/person/alice/room"] == b"living_room"
    assert (out["sensorium/home/person/bob/room"], out["sensorium/home/person/bob/home"]) == (b"not_home", b"not_home")
    assert house.seq == 5
    # someone not enrolled counts in the room but gets no topics of their own
    house.apply(Presence(seq=6, room="kitchen", person="zoe", state="entered"))
    out = state.retained(house, TOPICS, ["alice", "bob"])
    assert out["sensorium/home/room/kitchen/people"] == b"1"
    assert not [t for t in out if "/zoe/" in t]


@pytest.mark.parametrize("speaker_first", [True, False])
def test_last_speaker_whichever_event_comes_first(speaker_first: bool) -> None:
    house = House(ROOMS)
    final = Transcript(seq=2, room="kitchen", utterance_id="u7", final=True, text="lights on", t0=5.0)
    who = SpeakerIdentified(seq=3, room="kitchen", utterance_id="u7", person="bob", score=0.8, time=5.5)
    partial = Transcript(seq=1, room="kitchen", utterance_id="u7", final=False, text="lights")
    house.apply(partial)
    assert house.rooms["kitchen"].last_speaker == ""
    for ev in (who, final) if speaker_first else (final, who):
        house.apply(ev)
    room = house.rooms["kitchen"]
    assert (room.last_speaker, room.text, room.utterance_id) == ("bob", "lights on", "u7")
    out = state.retained(house, TOPICS, [])
    assert out["sensorium/home/room/kitchen/last_speaker"] == b"bob"
    assert json.loads(out["sensorium/home/room/kitchen/last_speaker/attributes"])["text"] == "lights on"


def test_forwarded_events_and_partials() -> None:
    final = Transcript(seq=9, room="living_room", utterance_id="u", final=True, text="hi", speaker="alice")
    out = dict(state.forwarded(final, TOPICS))
    assert json.loads(out["sensorium/home/events/transcript/living_room"])["seq"] == 9
    voice = json.loads(out["sensorium/home/room/living_room/voice"])
    assert voice == {"event_type": "transcript", "speaker": "alice", "text": "hi", "utterance_id": "u"}
    assert state.forwarded(Transcript(room="kitchen", final=False, text="h"), TOPICS) == []


def test_discovery_unique_ids_are_stable_and_distinct_per_site() -> None:
    home = {**room_configs(TOPICS, "living_room", 180), **person_configs(TOPICS, "alice", 180)}
    cabin = Topics("sensorium", "cabin", "homeassistant")
    other = {**room_configs(cabin, "living_room", 180), **person_configs(cabin, "alice", 180)}
    ids = [c["unique_id"] for c in home.values()]
    assert len(set(ids)) == len(ids) == 6
    assert not set(ids) & {c["unique_id"] for c in other.values()}
    assert ids == [c["unique_id"] for c in room_configs(TOPICS, "living_room", 180).values()] + [
        c["unique_id"] for c in person_configs(TOPICS, "alice", 180).values()
    ]
    assert all(t.startswith("homeassistant/") and t.endswith("/config") for t in home)
    assert all(not c["state_topic"].startswith("homeassistant/") for c in home.values())
    assert (
        "expire_after"
        not in room_configs(TOPICS, "kitchen", 0)["homeassistant/binary_sensor/sensorium_home/kitchen_occupancy/config"]
    )


def test_topics_and_slugs() -> None:
    assert slug("Living Room") == "living_room" and slug("  Zoë ") == "zo"
    assert TOPICS.command("sensorium/home/say/kitchen") == ("say", "kitchen")
    assert TOPICS.command("sensorium/home/say_person/alice") == ("say_person", "alice")
    assert TOPICS.command("sensorium/home/stop/kitchen") == ("stop", "kitchen")
    for topic in (
        "sensorium/home/say",
        "sensorium/home/say/a/b",
        "sensorium/cabin/say/kitchen",
        "sensorium/home/sing/x",
    ):
        assert TOPICS.command(topic) is None
    assert TOPICS.event("node_status", "") == "sensorium/home/events/node_status/-"


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_any_say_payload_is_text_or_a_clear_refusal(payload: bytes) -> None:
    try:
        cmd = parse_say(payload, 200)
    except CommandError as exc:
        assert str(exc)
    else:
        assert cmd.text and cmd.text == cmd.text.strip() and len(payload) <= 200


def test_say_payload_forms() -> None:
    assert parse_say(b"  dinner is ready \n", 100).text == "dinner is ready"
    cmd = parse_say(b'{"text": "hi", "person": "alice", "voice": "flite:slt"}', 100)
    assert (cmd.text, cmd.person, cmd.voice) == ("hi", "alice", "flite:slt")
    with pytest.raises(CommandError, match="Expected `str`, got `int`"):
        parse_say(b'{"text": 5}', 100)
    with pytest.raises(CommandError, match="missing required field `text`"):
        parse_say(b'{"person": "alice"}', 100)


@pytest.mark.parametrize(
    ("mqtt", "expected"),
    [
        ({"port": 70000}, r"\[mqtt\] port must be 1-65535, got 70000"),
        ({"site": "my home"}, r"\[mqtt\] site must be letters, digits"),
        ({"base_topic": "sensorium/#"}, r"\[mqtt\] base_topic must be topic levels"),
        ({"discovery_prefix": ""}, r"\[mqtt\] discovery_prefix must be topic levels"),
        ({"password_file": "/etc/pw"}, r"\[mqtt\] password_file needs a username"),
        ({"ca_file": "/etc/ca.pem"}, r"\[mqtt\] ca_file is only used with tls = true"),
        ({"refresh": "often"}, r"\[mqtt\] refresh: expected a duration"),
        ({"keepalive": 1}, r"\[mqtt\] keepalive must be at least 5"),
        ({"host": 5}, r"\[mqtt\] host: Expected `str`, got `int`"),
        ({"brokr": "x"}, r"\[mqtt\] unknown key 'brokr'"),
    ],
)
def test_mqtt_table_errors_name_the_key(mqtt: dict[str, object], expected: str) -> None:
    raw = {"rooms": {"kitchen": {}}, "edges": {"pi": {"room": "kitchen"}}, "mqtt": mqtt}
    with pytest.raises(ConfigError, match=r"^deploy.toml: " + expected):
        from_dict(raw, {}, {}, "deploy.toml")


def test_mqtt_table_defaults() -> None:
    dep = from_dict({"rooms": {"k": {}}, "edges": {"pi": {"room": "k"}}, "mqtt": {"host": "broker.lan"}}, {})
    assert dep.mqtt is not None
    assert (dep.mqtt.host, dep.mqtt.port, dep.mqtt.base_topic, dep.mqtt.discovery_prefix, dep.mqtt.site) == (
        "broker.lan", 1883, "sensorium", "homeassistant", "home",
    )  # fmt: skip
    assert from_dict({"rooms": {"k": {}}, "edges": {"pi": {"room": "k"}}}, {}).mqtt is None


def test_state_file_round_trip_private_and_damage_named(tmp_path: Path) -> None:
    house = House(ROOMS)
    house.apply(Presence(seq=41, room="kitchen", person="alice", state="entered", time=12.0))
    path = tmp_path / "data" / "mqtt-home.json"
    state.save(path, house.saved())
    assert os.stat(path).st_mode & 0o777 == 0o600
    again = House(ROOMS, state.load(path))
    assert (again.seq, again.where("alice")) == (41, "kitchen")
    assert state.load(tmp_path / "none.json") is None
    path.write_bytes(b'{"seq": 4')
    with pytest.raises(state.StateFileError, match=rf"{path}: damaged MQTT bridge state"):
        state.load(path)


def test_only_a_refused_connack_counts_as_wrong_credentials() -> None:
    # paho 2 reports an MQTT 3.1.1 CONNACK 4 ("bad user name or password") as reason code 134, 5 as 135
    assert credentials_refused(MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=134)))
    assert credentials_refused(MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=135)))
    assert credentials_refused(MqttConnectError(5))
    assert not credentials_refused(MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=136)))  # unavailable
    # a publish while the broker is going away: paho's MQTT_ERR_NO_CONN is 4 too, and must be retried
    assert not credentials_refused(aiomqtt.MqttCodeError(4, "Could not publish message"))
    assert not credentials_refused(aiomqtt.MqttError("Operation timed out"))


def test_the_home_assistant_comparison_catches_replays_misses_and_wrong_finals() -> None:
    # the oracle of the Home Assistant test and benchmark can fail: synthetic runs with known faults
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.mqtt import Change, SessionRun, compare

    events = [
        Presence(seq=1, time=100.0, room="kitchen", person="alice", state="entered", people=1),
        Presence(seq=2, time=110.0, room="kitchen", person="alice", state="left", people=0),
    ]
    arrived = {1: 100.5, 2: 110.5}

    def run(tracker: list[tuple[float, str]]) -> SessionRun:
        r = SessionRun(rooms=["kitchen"], people=["alice"], events=events, arrived=arrived)
        r.changes = [Change("device_tracker.alice", v, t) for t, v in tracker]
        r.final_ha = {"device_tracker.alice": tracker[-1][1]}
        return r

    def tracker(result: dict[str, Any], key: str) -> Any:
        value = result[key]
        return value.get("device_tracker.alice") if isinstance(value, dict) else value

    good = compare(run([(50.0, "not_home"), (100.7, "home"), (110.6, "not_home")]))
    assert tracker(good, "missed") is tracker(good, "extra") is tracker(good, "wrong_final") is None
    matched = [m for m in good["matched"] if m["entity"] == "device_tracker.alice"]
    assert [round(m["ha"] - m["event"], 1) for m in matched] == [0.7, 0.6]
    replayed = compare(run([(50.0, "not_home"), (100.7, "home"), (110.6, "not_home"), (130.0, "home")]))
    assert tracker(replayed, "extra") == ["home"]
    assert tracker(replayed, "wrong_final") == {"ha": "home", "expected": "not_home"}
    missed = compare(run([(50.0, "not_home")]))
    assert tracker(missed, "missed_while_ha_online") == ["home"]
    away = compare(run([(50.0, "not_home"), (99.0, "unavailable"), (111.0, "not_home")]))
    assert tracker(away, "missed") == ["home"] and tracker(away, "missed_while_ha_online") is None


def test_the_bridge_depends_on_pipeline_only() -> None:
    import ast

    root = Path(__file__).resolve().parents[1] / "bridges"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                # of sensorium's own layers, only the runtime core and the bridges themselves
                if name.split(".")[0] == "sensorium":
                    assert name.split(".")[1:2] in (["pipeline"], ["bridges"]), f"{path}: imports {name}"
