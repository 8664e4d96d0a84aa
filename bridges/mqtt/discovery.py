"""Home Assistant MQTT discovery configs: one device per room, one per enrolled person.

Room: ``binary_sensor.<room>_occupancy`` (device class occupancy), ``sensor.<room>_people`` (count;
attributes: names and the unknown count), ``sensor.<room>_last_speaker`` and ``event.<room>_voice``
(event types ``wake`` and ``transcript``). Person: ``device_tracker.<person>`` (home / not_home) and
``sensor.<person>_room`` (the room, or not_home). Every entity has the bridge's availability topic and a
``unique_id`` built from the site, the room or person and the entity, so it stays the same across
restarts. The states that go stale when the bridge stops hearing from the hub (occupancy, counts,
rooms) carry ``expire_after``; the bridge re-publishes them more often than that.

The keys are the long forms of Home Assistant's schema (``homeassistant/components/mqtt``).
"""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

from sensorium.bridges.mqtt.topics import Topics, slug, title


def _version() -> str:
    try:
        return metadata.version("sensorium")
    except metadata.PackageNotFoundError:
        return "0"


ORIGIN = {"name": "sensorium", "sw_version": _version(), "support_url": "https://github.com/sensorium/sensorium"}


def _common(topics: Topics, device: dict[str, Any], unique: str, object_id: str) -> dict[str, Any]:
    return {
        "unique_id": f"sensorium_{topics.site}_{unique}",
        "object_id": object_id,
        "device": device,
        "origin": ORIGIN,
        "availability_topic": topics.status,
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": 1,
    }


def room_configs(topics: Topics, room: str, expire_after: int) -> dict[str, dict[str, Any]]:
    """Discovery topic → config of one room's entities."""
    s = slug(room)
    device = {
        "identifiers": [f"sensorium_{topics.site}_room_{s}"],
        "name": title(room),
        "manufacturer": "sensorium",
        "model": "Room",
        "suggested_area": title(room),
    }
    expire = {"expire_after": expire_after} if expire_after > 0 else {}
    return {
        topics.discovery("binary_sensor", f"{s}_occupancy"): {
            **_common(topics, device, f"{s}_occupancy", f"{s}_occupancy"),
            "name": "Occupancy",
            "device_class": "occupancy",
            "state_topic": topics.room(room, "occupancy"),
            "payload_on": "ON",
            "payload_off": "OFF",
            **expire,
        },
        topics.discovery("sensor", f"{s}_people"): {
            **_common(topics, device, f"{s}_people", f"{s}_people"),
            "name": "People",
            "icon": "mdi:account-group",
            "state_topic": topics.room(room, "people"),
            "json_attributes_topic": topics.room(room, "people/attributes"),
            "state_class": "measurement",
            **expire,
        },
        topics.discovery("sensor", f"{s}_last_speaker"): {
            **_common(topics, device, f"{s}_last_speaker", f"{s}_last_speaker"),
            "name": "Last speaker",
            "icon": "mdi:account-voice",
            "state_topic": topics.room(room, "last_speaker"),
            "json_attributes_topic": topics.room(room, "last_speaker/attributes"),
        },
        topics.discovery("event", f"{s}_voice"): {
            **_common(topics, device, f"{s}_voice", f"{s}_voice"),
            "name": "Voice",
            "icon": "mdi:microphone-message",
            "state_topic": topics.room(room, "voice"),
            "event_types": ["wake", "transcript"],
        },
    }


def person_configs(topics: Topics, person: str, expire_after: int) -> dict[str, dict[str, Any]]:
    """Discovery topic → config of one person's entities."""
    s = slug(person)
    device = {
        "identifiers": [f"sensorium_{topics.site}_person_{s}"],
        "name": person,
        "manufacturer": "sensorium",
        "model": "Person",
    }
    expire = {"expire_after": expire_after} if expire_after > 0 else {}
    return {
        topics.discovery("device_tracker", s): {
            **_common(topics, device, f"{s}_tracker", s),
            "name": None,  # the entity is the device: device_tracker.<person>
            "state_topic": topics.person(person, "home"),
            "payload_home": "home",
            "payload_not_home": "not_home",
            "source_type": "router",
            "json_attributes_topic": topics.person(person, "attributes"),
        },
        topics.discovery("sensor", f"{s}_room"): {
            **_common(topics, device, f"{s}_room", f"{s}_room"),
            "name": "Room",
            "icon": "mdi:home-map-marker",
            "state_topic": topics.person(person, "room"),
            "json_attributes_topic": topics.person(person, "attributes"),
            **expire,
        },
    }


def payload(config: dict[str, Any]) -> bytes:
    return json.dumps(config, separators=(",", ":")).encode()
